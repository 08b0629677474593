"""The ``eventgw`` command line: configures logging, owns signals, wires services."""
