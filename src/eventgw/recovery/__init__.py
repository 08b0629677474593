"""Failed-writes processor: replays the failed-writes topic and the backup store (SYSTEM.md 2.6)."""
