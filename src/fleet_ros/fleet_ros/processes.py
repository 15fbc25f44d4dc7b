"""For processes that start children and stop them with SIGINT (then SIGKILL after a grace period)."""

from __future__ import annotations

import signal
import threading


def let_sigint_reach_children() -> None:
    """Call before starting children. A shell starts background jobs (`make demo &`, CI steps) with SIGINT ignored,
    and an ignored signal survives exec, so every child would ignore the SIGINT meant to stop it cleanly and only the
    SIGKILL would end it, mid-write (a truncated recording). A *handled* SIGINT is reset to the default in a child.
    Only the main thread may change signal handling; elsewhere this does nothing."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
