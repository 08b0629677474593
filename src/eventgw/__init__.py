"""eventgw: a priority-aware, Kafka-backed event gateway."""

__version__ = "0.1.0"
