"""For processes that start children and stop them with SIGINT (then SIGKILL after a grace period).

The one place that starts a child in its own session and stops it by PID; `fleet_bringup.processes.Supervisor`,
the lifecycle supervisor, the simulator's campaign rig, the benchmarks and the test harness all build on it.
It lives here rather than in fleet_bringup because the orchestrator (site server) does not depend on the bringup
package, while every ROS package depends on fleet_ros."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

STOP_GRACE_SEC = 5.0
KILL_WAIT_SEC = 10.0


def let_sigint_reach_children() -> None:
    """Call before starting children. A shell starts background jobs (`make demo &`, CI steps) with SIGINT ignored,
    and an ignored signal survives exec, so every child would ignore the SIGINT meant to stop it cleanly and only the
    SIGKILL would end it, mid-write (a truncated recording). A *handled* SIGINT is reset to the default in a child.
    Only the main thread may change signal handling; elsewhere this does nothing."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def start_child(
    argv: Sequence[str],
    *,
    log: IO[bytes] | IO[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a session of its own (a terminal's Ctrl-C or the parent's process-group signal does not reach
    it; it is stopped by PID, in the order its owner chooses). With `log`, stdout and stderr go to that file; without,
    they are inherited. stdin is /dev/null. Raises OSError when the executable cannot be started."""
    let_sigint_reach_children()
    return subprocess.Popen(  # noqa: S603  # argv is the caller's own program list; no shell is involved
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        stdin=subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
    )


def stop_child(popen: subprocess.Popen[bytes], grace: float = STOP_GRACE_SEC) -> int:
    """SIGINT by PID, wait up to `grace` seconds, then SIGKILL (and wait again). Returns the exit code."""
    if popen.poll() is None:
        os.kill(popen.pid, signal.SIGINT)
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(popen.pid, signal.SIGKILL)
            popen.wait(timeout=grace)
    return popen.returncode


def kill_child(popen: subprocess.Popen[bytes], timeout: float = KILL_WAIT_SEC) -> None:
    """SIGKILL by PID now (a crash) and reap it."""
    if popen.poll() is None:
        os.kill(popen.pid, signal.SIGKILL)
        popen.wait(timeout=timeout)


def stop_children(popens: Sequence[subprocess.Popen[bytes]], grace: float = STOP_GRACE_SEC) -> None:
    """SIGINT every child at once (in the given order), then wait for them under one shared deadline; SIGKILL
    whatever outlives `grace`."""
    for popen in popens:
        if popen.poll() is None:
            os.kill(popen.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    for popen in popens:
        try:
            popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.kill(popen.pid, signal.SIGKILL)
            popen.wait(timeout=grace)
