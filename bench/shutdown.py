"""SIGINT to `ros2 launch fleet_bringup sim_launch.py` (a small simulated fleet, optionally with the gateway and the
Foxglove server): how long each launched process takes to finish after the SIGINT, whether each finished cleanly
(exit 0), and how many output lines look like trouble (a non-zero exit, FATAL, a traceback, a context error).

Prints one JSON line. The yardstick is ros2 launch's own: a process still running `sigterm_timeout` (5 s) after
the SIGINT gets SIGTERM, and SIGKILL after as long again. Exit code 0 when every process finished cleanly and nothing
looked like trouble."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Child, write_fleet_config

LAUNCH_SIGTERM_TIMEOUT_S = 5.0
FINISHED = re.compile(r'\[INFO\] \[([\w-]+)\]: process has finished cleanly')
STARTED = re.compile(r'\[INFO\] \[([\w-]+)\]: process started with pid')
TROUBLE = re.compile(r'process has died|exited with code|FATAL|Traceback|context is invalid|Failed to ')
POLL_S = 0.05


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def up(text: str, shards: int, servers: bool) -> bool:
    names = STARTED.findall(text)
    spoke = all(f'[{name}] ' in text for name in names)
    serving = not servers or re.search(r'workers serving on|fleet_gateway.server: listening on', text) is not None
    return len(re.findall('LEADER of', text)) >= shards and bool(names) and spoke and serving


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f'timed out after {timeout:.0f}s waiting for {what}')
        time.sleep(POLL_S)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--servers', action='store_true', help='run the gateway and the Foxglove server too')
    parser.add_argument('--robots-per-host', type=int, default=2)
    parser.add_argument('--timeout', type=float, default=120.0, help='bound of the start and of the stop (s)')
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix='bench-shutdown-'))
    os.environ['FLEETLANES_STATE_DIR'] = str(work / 'state')  # the orchestrators' journals of this run only
    shards = {'zone_1': 3, 'zone_2': 2}
    config = write_fleet_config(work, 'site_a', shards)
    argv = ['ros2', 'launch', 'fleet_bringup', 'sim_launch.py', f'fleet_config:={config}', 'site:=site_a']
    argv += [f'robots_per_host:={opts.robots_per_host}', f'store_dir:={work / "stores"}']
    argv += ['gateway_port:=0', 'foxglove_port:=0'] if opts.servers else ['gateway:=false', 'foxglove:=false']
    launch = Child(argv, 'sim-launch')
    launched: list[int] = []
    finished: dict[str, float] = {}
    try:
        # Up: a leader per shard, every process has spoken (past its imports, running), the gateway serves.
        wait_until(lambda: up(launch.output(), len(shards), opts.servers), opts.timeout, 'the fleet to be up')
        launched = children_of(launch.proc.pid)
        started = STARTED.findall(launch.output())
        load = os.getloadavg()[0]
        sent = time.monotonic()
        os.kill(launch.proc.pid, signal.SIGINT)
        deadline = sent + opts.timeout
        while launch.alive() and time.monotonic() < deadline:
            for name in FINISHED.findall(launch.output()):
                finished.setdefault(name, round(time.monotonic() - sent, 2))
            time.sleep(POLL_S)
        launch_exit = launch.proc.poll()
        for name in FINISHED.findall(launch.output()):
            finished.setdefault(name, round(time.monotonic() - sent, 2))
    finally:
        text = launch.output()
        launch.stop()
        for pid in launched:  # what ros2 launch left behind if it had to be killed
            if Path(f'/proc/{pid}').exists():
                os.kill(pid, signal.SIGKILL)
    trouble = [line for line in text.splitlines() if TROUBLE.search(line)]
    result = {
        'bench': 'shutdown',
        'servers': opts.servers,
        'processes': len(started),
        'finished_cleanly': len(finished),
        'ros2_launch_exit': launch_exit,
        'slowest_s': max(finished.values(), default=None),
        'finished_s': dict(sorted(finished.items(), key=lambda kv: -kv[1])),
        'trouble_lines': len(trouble),
        'first_trouble': trouble[:3],
        'target_s': LAUNCH_SIGTERM_TIMEOUT_S,
        'loadavg_1m_at_sigint': round(load, 2),
    }
    print(json.dumps(result))
    ok = launch_exit == 0 and len(finished) == len(started) and not trouble
    return 0 if ok else 1


if __name__ == '__main__':
    raise SystemExit(main())
