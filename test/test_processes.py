"""Children are stopped by SIGINT even when their parent was started as a background job (SIGINT ignored). The
shared stop (fleet_ros.processes): a child that honours SIGINT ends on it; one that ignores it is SIGKILLed after the
grace period, alone (stop_child) or among others under one shared deadline (stop_children)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fleet_ros.processes import kill_child, start_child, stop_child, stop_children
from harness.wait import wait_for

pytestmark = pytest.mark.system

PARENT = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from fleet_bringup.nodes import NodeSpec
    from fleet_bringup.processes import Supervisor

    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # as a shell starts `cmd &`
    supervisor = Supervisor(Path(sys.argv[1]))
    child = supervisor.start(
        NodeSpec('sleeper', 'none', 'none'),
        argv=[sys.executable, '-c', 'import time; print("up", flush=True); time.sleep(60)'],
    )
    deadline = time.monotonic() + 10
    while 'up' not in child.tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    code = supervisor.stop(child, grace=5.0)
    print(f'code={code} seconds={time.monotonic() - started:.1f}')
    """
)


def test_sigint_stops_children_of_a_background_job(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, '-c', PARENT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as a shell starts a background job
    )
    assert done.returncode == 0, done.stderr
    # The child ended on the SIGINT (KeyboardInterrupt exit status), not on the SIGKILL after the grace period.
    assert 'code=1 ' in done.stdout or 'code=-2 ' in done.stdout, done.stdout
    assert float(done.stdout.split('seconds=')[1]) < 4.0


# Each prints once its SIGINT handling is in place, so no test signals a child that is still starting.
HONOURS = 'import time; print("ready", flush=True); time.sleep(60)'
IGNORES = (
    'import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print("ready", flush=True); time.sleep(60)'
)


def start_ready(code: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open('ab') as out:
        popen = start_child([sys.executable, '-c', code], log=out)
    wait_for(lambda: 'ready' in log.read_text() or popen.poll() is not None, 20.0, what=f'{log.name} ready')
    assert popen.poll() is None, log.read_text()
    return popen


def test_stop_child_ends_a_child_on_sigint_and_kills_one_that_ignores_it(tmp_path: Path) -> None:
    polite = start_ready(HONOURS, tmp_path / 'polite.log')
    assert stop_child(polite, grace=10.0) in (1, -signal.SIGINT)  # KeyboardInterrupt exit, not the SIGKILL
    stubborn = start_ready(IGNORES, tmp_path / 'stubborn.log')
    assert stop_child(stubborn, grace=0.5) == -signal.SIGKILL
    assert stop_child(stubborn) == -signal.SIGKILL  # an exited child is left alone


def test_stop_children_shares_one_grace_period(tmp_path: Path) -> None:
    stubborn = [start_ready(IGNORES, tmp_path / f'stubborn{i}.log') for i in range(2)]
    polite = start_ready(HONOURS, tmp_path / 'polite.log')
    started = time.monotonic()
    stop_children([*stubborn, polite], grace=2.0)
    took = time.monotonic() - started
    assert [p.returncode for p in stubborn] == [-signal.SIGKILL, -signal.SIGKILL]
    assert polite.returncode in (1, -signal.SIGINT)  # signalled at once, so it ended on SIGINT, not a SIGKILL
    # One deadline for all: one grace period (2 s), not one per stubborn child (4 s).
    assert took < 3.5, took


def test_kill_child_is_a_crash(tmp_path: Path) -> None:
    polite = start_ready(HONOURS, tmp_path / 'polite.log')
    kill_child(polite)
    assert polite.returncode == -signal.SIGKILL
