"""Failed-writes processor: replays the failed-writes topic and the backup store.

docs/design.md, "Failed-writes processor"; docs/failure-handling.md, "Replay".
"""
