"""Sampling profiles of the gateway processes under load, with py-spy.

py-spy attaches to a running process (ptrace) without changing it; ``--nonblocking`` keeps
it from pausing the target at each sample, so the profiled run stays close to an unprofiled
one. The raw output (one line per distinct stack: ``thread (tid): name;frame;…;frame N``)
is summarised here into the functions with the most samples, by self and by inclusive time.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME_RE = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy_path() -> str:
    """The py-spy executable (the venv's first), or a clear error saying how to get it."""
    here = Path(sys.executable).with_name("py-spy")
    found = str(here) if here.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


class PySpy:
    """A ``py-spy record`` attached to one process until ``stop``."""

    def __init__(self, pid: int, output: Path, *, native: bool, rate_hz: int = 100) -> None:
        self.output = output
        self._proc = subprocess.Popen(
            [
                py_spy_path(),
                "record",
                "--pid",
                str(pid),
                "--threads",
                # --native unwinds C stacks, which needs the target paused at each sample.
                *(["--native"] if native else ["--nonblocking"]),
                "--rate",
                str(rate_hz),
                "--format",
                "raw",
                "--output",
                str(output),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        """Stop sampling (SIGINT makes py-spy write its output) and wait for the file."""
        self._proc.send_signal(signal.SIGINT)
        try:
            _, err = self._proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            _, err = self._proc.communicate()
        if not self.output.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")


def _short(frame: str) -> str:
    """``func (…/pkg/module.py:12)`` → ``func (pkg/module.py)``: one name per function."""
    m = _FRAME_RE.match(frame)
    if m is None:
        return frame
    parts = m.group("file").split("/")
    return f"{m.group('func')} ({'/'.join(parts[-2:])})"


def _line(frame: str) -> str:
    """``func (…/pkg/module.py:12)`` → ``pkg/module.py:12 func``: one name per source line."""
    m = _FRAME_RE.match(frame)
    if m is None:
        return frame
    line = frame.rsplit(":", 1)[-1].rstrip(")")
    parts = m.group("file").split("/")
    return f"{'/'.join(parts[-2:])}:{line} {m.group('func')}"


def _thread_name(root: str) -> str:
    # "thread (1234): kafka-poll-primary-p20" → "kafka-poll-primary-p20"
    return root.split(": ", 1)[1] if ": " in root else root


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Top functions (self, inclusive) and source lines (self) by share of the samples.

    A function's *self* samples include the C code it calls (protobuf, librdkafka, the event
    loop), since py-spy without ``--native`` sees only Python frames.
    """
    self_counts: Counter[str] = Counter()
    line_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        threads[_thread_name(frames[0])] += count
        funcs = [_short(f) for f in frames[1:]]
        if not funcs:
            continue
        total += count
        self_counts[funcs[-1]] += count
        line_counts[_line(frames[-1])] += count
        for f in set(funcs):
            incl_counts[f] += count

    def pct(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": f, "samples": n, "pct": round(100 * n / total, 1)}
            for f, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "threads_pct": {t: round(100 * n / max(total, 1), 1) for t, n in threads.most_common()},
        "self": pct(self_counts),
        "self_lines": pct(line_counts),
        "inclusive": pct(incl_counts),
    }
