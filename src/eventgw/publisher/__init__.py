"""Prep publisher: owns the Kafka producers; durable before it answers (SYSTEM.md 2.2)."""
