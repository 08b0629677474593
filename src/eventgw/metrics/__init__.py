"""Metrics: the closed vocabulary of names and the Prometheus backend."""
