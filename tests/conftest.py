"""Shared pytest configuration: fixtures for the real local Kafka and S3 servers live in tests/fixtures."""

pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.s3", "tests.fixtures.stack"]
