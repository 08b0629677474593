"""Shared pytest configuration.

Fixtures for the real local Kafka, the S3-compatible server, the in-process write path and
headless Chromium live in tests/fixtures; so does the check that every test leaves the
logging configuration as it found it.
"""

pytest_plugins = [
    "tests.fixtures.browser",
    "tests.fixtures.kafka",
    "tests.fixtures.logging_state",
    "tests.fixtures.s3",
    "tests.fixtures.stack",
]
