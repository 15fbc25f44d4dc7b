"""Spinning an EventsExecutor beside other threads without starving them."""

from __future__ import annotations

import threading

from rclpy.executors import Executor, ExternalShutdownException

SPIN_SLICE_SEC = 0.01
"""EventsExecutor.spin() holds the GIL; short spin_once slices let asyncio and other threads run."""


class SpinThread:
    """Runs `executor.spin_once(SPIN_SLICE_SEC)` in a daemon thread until `stop()`."""

    def __init__(self, executor: Executor, *, name: str = 'rclpy-spin') -> None:
        self._executor = executor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> SpinThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and self._executor.context.ok():
                self._executor.spin_once(timeout_sec=SPIN_SLICE_SEC)
        except (ExternalShutdownException, KeyboardInterrupt):
            pass

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
