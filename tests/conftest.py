"""Shared pytest configuration.

Fixtures for the real local Kafka, the S3-compatible server, the in-process write path,
headless Chromium and the fault matrix's options and report live in tests/fixtures.
"""

pytest_plugins = [
    "tests.fixtures.browser",
    "tests.fixtures.faults",
    "tests.fixtures.kafka",
    "tests.fixtures.s3",
    "tests.fixtures.stack",
]
