"""Orchestrator: consume the lanes into a priority buffer and serve batches to processors."""
