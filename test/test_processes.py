"""Children are stopped by SIGINT even when their parent was started as a background job (SIGINT ignored)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
