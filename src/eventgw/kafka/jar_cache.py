"""The cache of Apache Kafka broker jars, fetched once from Maven Central with ``mvn``.

There is no Docker on the machines this project runs on, so the project runs Kafka from its
jars (see `eventgw.kafka.local_broker`). ``ensure_kafka_jars`` copies the runtime classpath of
``kafka_2.13`` into ``<home>/kafka-<version>/libs``; ``default_home`` says where that home is.

This module uses the standard library only: it never imports the Kafka client.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.resources
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

logger = logging.getLogger(__name__)

KAFKA_VERSION: Final = "4.1.1"
"""The Apache Kafka release the local broker runs (override per call with ``version=``)."""

_MVN_TIMEOUT_S: Final = 900.0
_TAIL_CHARS: Final = 4000


def default_home() -> Path:
    """Return the cache and state directory: ``$EVENTGW_HOME`` or ``~/.cache/eventgw``.

    It holds the fetched jars (``kafka-<version>/libs``) and the data of the local clusters
    (``clusters/<name>``).
    """
    # The one environment read outside cli: the jar cache must be found the same way by the CLI,
    # by pytest fixtures and by scripts, none of which share a settings object.
    home = os.environ.get("EVENTGW_HOME")
    if home:
        return Path(home).expanduser().resolve()  # mvn and java run in other directories
    return Path.home() / ".cache" / "eventgw"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    Blocks until the lock is free. flock locks belong to the open file description, so the lock
    is released by the kernel if the holder dies. The jar cache and the local brokers' data
    directories serialise their writers with it, across processes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_kafka_jars(home: Path, version: str = KAFKA_VERSION) -> Path:
    """Return the directory holding the Kafka broker's runtime jars, fetching them if needed.

    The jars go to ``<home>/kafka-<version>/libs``. The first call runs
    ``mvn -B -q dependency:copy-dependencies`` on the pom packaged with eventgw (copied into the
    cache first) and writes a ``COMPLETE`` marker listing the jars; later calls see the marker and
    return at once, without starting Maven.

    Blocking: yes, for as long as Maven runs (seconds with a warm ``~/.m2``, up to 15 minutes
    before it gives up). Concurrent callers, in this or other processes, serialise on an
    ``flock`` of ``<home>/kafka-<version>/.lock``; only the first one runs Maven. A failed or
    interrupted fetch leaves no marker and no ``libs`` directory, so the next call retries.

    Args:
        home: The cache directory, usually ``default_home()``.
        version: The ``org.apache.kafka:kafka_2.13`` version to fetch.

    Returns:
        The libs directory, suitable for ``java -cp "<libs>/*"``.

    Raises:
        RuntimeError: ``mvn`` is not on PATH, fails, times out, or fetches no Kafka jar. The
            message carries the tail of Maven's output.
    """
    root = home / f"kafka-{version}"
    libs = root / "libs"
    marker = root / "COMPLETE"
    if marker.is_file():
        return libs
    with file_lock(root / ".lock"):
        # Another caller may have finished the fetch while this one waited for the lock.
        if marker.is_file():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError(
                "mvn is not on PATH: it is needed once to fetch the Kafka broker jars "
                f"(org.apache.kafka:kafka_2.13:{version}) into {libs}"
            )
        pom = root / "pom.xml"
        pom.write_bytes(importlib.resources.files("eventgw.kafka").joinpath("pom.xml").read_bytes())
        # Maven writes into a scratch directory that is renamed at the end, so a half-copied
        # classpath is never mistaken for a complete one.
        partial = root / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(libs, ignore_errors=True)
        argv = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
            f"-Dkafka.version={version}",
        ]
        logger.info("kafka.jars.fetch version=%s dir=%s", version, libs)
        started = time.monotonic()
        try:
            result = subprocess.run(
                argv,
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=_MVN_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.output if isinstance(exc.output, str) else ""
            raise RuntimeError(
                f"mvn did not fetch Kafka {version} jars within {_MVN_TIMEOUT_S:.0f} s:\n"
                f"{output[-_TAIL_CHARS:]}"
            ) from exc
        if result.returncode != 0:
            raise RuntimeError(
                f"mvn failed (exit {result.returncode}) fetching Kafka {version} jars "
                f"with {' '.join(argv)}:\n{result.stdout[-_TAIL_CHARS:]}"
            )
        jars = sorted(p.name for p in partial.glob("*.jar"))
        if f"kafka_2.13-{version}.jar" not in jars:
            raise RuntimeError(
                f"mvn succeeded but {partial} has no kafka_2.13-{version}.jar:\n"
                f"{result.stdout[-_TAIL_CHARS:]}"
            )
        partial.rename(libs)
        marker.write_text("\n".join(jars) + "\n", encoding="utf-8")
        logger.info(
            "kafka.jars.fetched version=%s jars=%d elapsed_s=%.1f",
            version,
            len(jars),
            time.monotonic() - started,
        )
    return libs
