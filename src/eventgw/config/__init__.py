"""Settings models (validated once at start-up) and the hot-reloaded dynamic config."""
