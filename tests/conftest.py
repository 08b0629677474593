"""Shared pytest configuration.

Fixtures for the real local Kafka, the S3-compatible server and the in-process write path
live in tests/fixtures.
"""

pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.s3", "tests.fixtures.stack"]
