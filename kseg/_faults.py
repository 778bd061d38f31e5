"""A test hook for tests/faults: hold a process at a named point so a test can signal it there.

With ``KSEG_FAULT_PAUSE=NAME`` (comma-separated names allowed) and ``KSEG_FAULT_MARKER=FILE``,
the first ``pause("NAME")`` of the process appends NAME to FILE and sleeps ``KSEG_FAULT_SECONDS`` (default 3) before going on;
the test waits for FILE and sends SIGINT (or SIGTERM) at that moment. Unset (always, outside
the tests), ``pause`` returns at once.
"""

from __future__ import annotations

import os
import time

_DONE: set[str] = set()


def pause(name: str) -> None:
    """Hold here for a while the first time the point ``name`` is reached, when a test asked for it."""
    wanted = os.environ.get("KSEG_FAULT_PAUSE")
    if not wanted or name not in wanted.split(",") or name in _DONE:
        return
    _DONE.add(name)
    marker = os.environ.get("KSEG_FAULT_MARKER")
    if marker:
        with open(marker, "a") as f:
            f.write(name + "\n")
    end = time.monotonic() + float(os.environ.get("KSEG_FAULT_SECONDS", "3"))
    while time.monotonic() < end:
        time.sleep(0.02)
