"""Ingest service: validate, authenticate, classify, schedule, publish (SYSTEM.md 2.1)."""
