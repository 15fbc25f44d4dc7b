"""Shared helpers for benchmarks: child processes stopped by PID, temporary fleet configs, RSS, percentiles."""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from fleet_core import stats
from fleet_ros.processes import start_child, stop_child


def percentile(values: Sequence[float], q: float) -> float:
    """fleet_core.stats.percentile; NaN (null in the JSON) when a variant ran no rounds."""
    return stats.percentile(values, q, math.nan)


def write_fleet_config(directory: Path, site: str, shards: dict[str, int], **tuning: object) -> Path:
    raw: dict[str, object] = {
        'sites': {site: {'shards': {s: {'agents': {'prefix': f'{s}_a', 'count': n}} for s, n in shards.items()}}}
    }
    raw.update(tuning)
    path = directory / 'fleet.yaml'
    path.write_text(yaml.safe_dump(raw))
    return path


class Child:
    """A benchmark child process with its log in a temp file; stopped by PID (SIGINT, then SIGKILL)."""

    def __init__(self, argv: Sequence[str], name: str) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f'bench-{name}-', suffix='.log', delete=False)
        env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
        profile_dir = os.environ.get('BENCH_PROFILE_DIR')
        if profile_dir:
            # py-spy samples the child; collapsed stacks land in BENCH_PROFILE_DIR/<name>.txt
            argv = ['py-spy', 'record', '--format', 'raw', '-r', '100', '-o', f'{profile_dir}/{name}.txt', '--', *argv]
        self.proc = start_child(argv, log=self.log, env=env)

    def rss_mb(self, peak: bool = True) -> float:
        field = 'VmHWM' if peak else 'VmRSS'
        try:
            for line in Path(f'/proc/{self.proc.pid}/status').read_text().splitlines():
                if line.startswith(field):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return float('nan')

    def cpu_s(self) -> float:
        try:
            fields = Path(f'/proc/{self.proc.pid}/stat').read_text().rsplit(')', 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
        except OSError:
            return float('nan')

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors='replace')

    def stop(self, grace: float = 5.0) -> None:
        stop_child(self.proc, grace)
        self.log.close()


def python_child(args: Sequence[str], name: str) -> Child:
    return Child([sys.executable, *args], name)
