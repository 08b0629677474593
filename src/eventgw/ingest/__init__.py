"""Ingest service: validate, authenticate, classify, schedule, publish.

docs/design.md, "Ingest service"; the modules are listed in docs/architecture.md, "Ingest".
"""
