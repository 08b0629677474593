"""Pure building blocks shared by every service: no I/O, no third-party clients."""
