"""CPU time and resident memory of child processes, read from /proc (Linux), for the demo's resource figures."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf('SC_CLK_TCK')


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_s: float
    rss_mb: float


def usage(pid: int) -> Usage | None:
    """CPU seconds (user + system) and RSS of a live process; None once it is gone."""
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
        status = Path(f'/proc/{pid}/status').read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(')') + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    rss_kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith('VmRSS:')), 0)
    return Usage(cpu, rss_kb / 1024)
