"""Prep publisher: owns the Kafka producers; durable before it answers.

docs/design.md, "Prep publisher"; capture order in docs/failure-handling.md, "Capture order".
"""
