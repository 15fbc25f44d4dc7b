"""The one runtime of every fleetlanes program: a private rclpy Context, SIGINT/SIGTERM as a request to stop, an
EventsExecutor spun on the main thread or in a SpinThread beside an asyncio loop, and an ordered shutdown.

rclpy's own signal handler shuts the context down at once, under whatever callback or task is running: publishers
then fail ("publisher's context is invalid") and the executor can abort releasing entities that are already gone.
Here rclpy's handlers are off and a signal only asks the program to stop. The program's work stops first (its loop
returns, its asyncio tasks are cancelled and its cleanup runs), then every lifecycle node runs its shutdown
transition, the nodes are destroyed, the executor is shut down, and only then the context: everything that runs on
the way down still has a valid context."""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any, Protocol, TypeVar

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.action import ActionClient, ActionServer
from rclpy.context import Context
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.experimental import EventsExecutor
from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from fleet_ros.spin import SPIN_SLICE_SEC, SpinThread

EXIT_OK = 0
EXIT_STARTUP = 2
"""Exit code of a program whose start failed on one of its `startup_errors` (as argparse exits on bad usage)."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STUCK_EXIT_DUMP_SEC = 8.0
"""A whole-process program still running this long after a stop was requested (or its body returned) prints the stack
of every thread to stderr, once: between ros2 launch's SIGTERM (5 s after its SIGINT) and its SIGKILL, a stuck
shutdown says where it is stuck before it is killed."""

NodeT = TypeVar('NodeT', bound=Node)
SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers


class ShutdownStep(Protocol):
    """What `shut_down_in_order` needs of an executor (rclpy's executors have these methods)."""

    def remove_node(self, node: Node) -> None: ...

    def shutdown(self, timeout_sec: float | None = None) -> bool: ...


def shut_down_in_order(nodes: Sequence[Node], executor: ShutdownStep, context: Context) -> None:
    """Lifecycle nodes run their shutdown transition, the nodes (last added first) leave the executor and are
    destroyed, the executor shuts down, then the context: each step while the context is still valid."""
    try:
        for node in reversed(nodes):
            if isinstance(node, LifecycleNode) and context.ok():
                _lifecycle_shutdown(node)
        for node in reversed(nodes):
            executor.remove_node(node)
            _destroy_actions(node)
            node.destroy_node()
        executor.shutdown()
    finally:
        context.try_shutdown()  # whatever failed on the way, the context does not outlive the program


def _destroy_actions(node: Node) -> None:
    """Destroy `node`'s action clients and servers, which rclpy's `destroy_node` leaves alone: the garbage collector
    would free their handles later, after the context is gone, and there Fast DDS can wait forever (a demo process
    hung at exit in `rcl_action_client_fini`)."""
    for waitable in list(node.waitables):
        if isinstance(waitable, (ActionClient, ActionServer)):
            waitable.destroy()  # type: ignore[no-untyped-call]  # rclpy leaves destroy() untyped


def _lifecycle_shutdown(node: LifecycleNode) -> None:
    # trigger_shutdown runs the node's on_shutdown from unconfigured, inactive or active; from finalized (or an
    # error state) no shutdown transition exists, and rclpy says so with an RCLError: nothing is left to run.
    try:
        node.trigger_shutdown()
    except RCLError:
        return


class RosProgram:
    """A running program as its body sees it: the context, the executor, the nodes to spin and to shut down, and
    whether a stop was requested (SIGINT/SIGTERM or `request_stop()`)."""

    def __init__(
        self, name: str, context: Context, executor: Executor, *, stuck_exit_dump_sec: float | None = None
    ) -> None:
        self.name = name
        self.context = context
        self.executor = executor
        self.nodes: list[Node] = []
        self.stop_reason = ''
        self._stop = threading.Event()
        self._stuck_exit_dump_sec = stuck_exit_dump_sec
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    # -- stopping ----------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """No stop requested and the context valid: what a program's loop checks."""
        return not self._stop.is_set() and self.context.ok()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_stop(self, reason: str = 'stop requested') -> None:
        """Ask the program to stop (safe from signal handlers and from any thread); the shutdown itself runs on the
        main thread once the program's loop or asyncio work has returned."""
        if not self._stop.is_set():
            self.stop_reason = reason
            self._arm_stuck_exit_dump()
        self._stop.set()
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def _arm_stuck_exit_dump(self) -> None:
        # faulthandler's watchdog is a C thread: it prints even when the main thread is stuck in C code holding the
        # GIL, and the interpreter cancels it at exit. Armed once: a second stop request does not postpone it.
        if self._stuck_exit_dump_sec is not None:
            faulthandler.dump_traceback_later(self._stuck_exit_dump_sec, exit=False)
            self._stuck_exit_dump_sec = None

    def _on_signal(self, signum: int, _frame: FrameType | None = None) -> None:
        self.request_stop(signal.Signals(signum).name)

    def install_signal_handlers(self, signals: Sequence[signal.Signals] = STOP_SIGNALS) -> dict[int, SignalHandler]:
        """SIGINT/SIGTERM ask the program to stop. Returns the previous handlers (for `restore_signal_handlers`).
        Only the main thread can install handlers; elsewhere this does nothing."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {sig: signal.getsignal(sig) for sig in signals}
        for sig in signals:
            signal.signal(sig, self._on_signal)
        return {sig: handler for sig, handler in previous.items() if handler is not None}

    @staticmethod
    def restore_signal_handlers(previous: dict[int, SignalHandler]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    # -- nodes and spinning on the main thread ---------------------------------------------------------------

    def add_node(self, node: NodeT) -> NodeT:
        """Spin `node` with the program's executor; it is shut down (lifecycle) and destroyed at the end."""
        self.executor.add_node(node)
        self.nodes.append(node)
        return node

    def spin_once(self, timeout_sec: float = SPIN_SLICE_SEC) -> None:
        self.executor.spin_once(timeout_sec=timeout_sec)

    def spin(self) -> None:
        """Spin on this thread until a stop is requested. In short slices: Jazzy's EventsExecutor.spin() holds the
        GIL (no Python signal handler would run) and misses entities created after add_node (a lifecycle node
        creates its own at configure); spin_once collects them again."""
        while self.running:
            self.spin_once()

    def spin_for(self, seconds: float) -> None:
        """Spin on this thread for `seconds`, or less if a stop is requested."""
        end = time.monotonic() + seconds
        while self.running and (left := end - time.monotonic()) > 0:
            self.spin_once(timeout_sec=left)

    # -- asyncio beside a spin thread -------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The program's asyncio loop (created on first use and set as this thread's loop), for nodes that need it
        when they are built."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        return self._loop

    @property
    def stop_event(self) -> asyncio.Event:
        """An asyncio.Event of the program's loop, set when a stop is requested (for work that winds itself down)."""
        if self._stop_event is None:
            self.loop  # noqa: B018 - the loop first: request_stop sets the event through it
            self._stop_event = asyncio.Event()
            if self._stop.is_set():
                self._stop_event.set()
        return self._stop_event

    def run_async(
        self,
        start: Callable[[], Awaitable[None]] | None = None,
        *,
        cleanup: Callable[[], Awaitable[None]] | None = None,
        cancel_on_stop: bool = True,
        signals: Sequence[signal.Signals] = STOP_SIGNALS,
    ) -> None:
        """Spin the nodes in a SpinThread and run `start()` on the program's loop; serve until a stop is requested
        (signals are handled on the loop) or `start()` raises. `start()` may return at once (servers started) or run
        until cancelled; without one, nothing runs on the loop but the wait. Then `start()`, if still running, is
        cancelled (or, with `cancel_on_stop=False`, awaited: it watches `stop_event` and winds itself down),
        `cleanup()` runs (nodes still spinning), leftover tasks are cancelled and the spin thread stops. Exceptions
        of `start()` and `cleanup()` propagate."""
        loop = self.loop
        stopped = self.stop_event
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
        spin = SpinThread(self.executor, name=f'{self.name}-rclpy').start()
        try:
            loop.run_until_complete(_serve(start or _nothing, stopped, cancel_on_stop=cancel_on_stop))
        finally:
            try:
                if cleanup is not None:
                    loop.run_until_complete(cleanup())
            finally:
                _cancel_leftovers(loop)
                spin.stop()
                for sig in signals:
                    loop.remove_signal_handler(sig)
                self.install_signal_handlers(signals)  # removing the loop's handlers restored Python's defaults

    # -- the end -----------------------------------------------------------------------------------------------

    def close(self) -> None:
        """The ordered shutdown (`shut_down_in_order`), then the loop is closed."""
        self._arm_stuck_exit_dump()
        try:
            shut_down_in_order(self.nodes, self.executor, self.context)
            self.nodes.clear()
        finally:
            if self._loop is not None:
                self._loop.close()


async def _serve(start: Callable[[], Awaitable[None]], stopped: asyncio.Event, *, cancel_on_stop: bool) -> None:
    work = asyncio.ensure_future(start())
    stop = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            work.result()  # raises what start() raised
            await stop  # started: serve until a stop is requested
        elif not cancel_on_stop:
            await work  # it saw stop_event too and winds itself down
    finally:
        work.cancel()
        stop.cancel()
        await asyncio.gather(work, stop, return_exceptions=True)


async def _nothing() -> None:
    return


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    leftover = asyncio.all_tasks(loop)
    for task in leftover:
        task.cancel()
    if leftover:
        loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))


@contextmanager
def ros_program(
    name: str,
    *,
    args: Sequence[str] | None = None,
    signals: Sequence[signal.Signals] = STOP_SIGNALS,
    ignore_signals_after: bool = False,
    short_lived: bool = False,
    stuck_exit_dump_sec: float | None = None,
) -> Iterator[RosProgram]:
    """A RosProgram with a fresh context (rclpy's signal handlers off; `args` are rclpy's, None: sys.argv) and
    `signals` asking it to stop; on exit the ordered shutdown (`RosProgram.close`), then the previous handlers, or
    with `ignore_signals_after` (a program that is the whole process) `signals` ignored until the process exits.

    The executor is an EventsExecutor; a `short_lived` program (a command-line client that creates and destroys
    service clients and subscriptions as it goes, where speed does not matter) gets a SingleThreadedExecutor: with
    the EventsExecutor, the middleware's threads call into an entity's event callbacks, and destroying a
    subscription or client while one does can crash the process (a fleetctl run ended in SIGSEGV after its work
    was done). Python's fault handler is on in every program, so a crash prints the stack of every thread; with
    `stuck_exit_dump_sec`, so does a program still running that long after a stop request or the end of its body."""
    if not faulthandler.is_enabled():
        faulthandler.enable()
    context = Context()
    rclpy.init(
        args=list(args) if args is not None else None, context=context, signal_handler_options=SignalHandlerOptions.NO
    )
    executor = SingleThreadedExecutor(context=context) if short_lived else EventsExecutor(context=context)
    program = RosProgram(name, context, executor, stuck_exit_dump_sec=stuck_exit_dump_sec)
    previous = program.install_signal_handlers(signals)
    try:
        yield program
    finally:
        try:
            program.close()
        finally:
            if ignore_signals_after:
                # The interpreter's own teardown (rclpy, DDS) can take seconds on a loaded host: a second SIGINT or
                # the SIGTERM that ros2 launch escalates to must not turn a clean exit into a kill (exit -15).
                program.restore_signal_handlers(dict.fromkeys(previous, signal.SIG_IGN))
            else:
                program.restore_signal_handlers(previous)


def run_program(
    name: str,
    body: Callable[[RosProgram], int | None],
    *,
    args: Sequence[str] | None = None,
    startup_errors: tuple[type[Exception], ...] = (),
    signals: Sequence[signal.Signals] = STOP_SIGNALS,
    whole_process: bool = True,
    stuck_exit_dump_sec: float = STUCK_EXIT_DUMP_SEC,
) -> int:
    """Run `body(program)` in a `ros_program` and return the exit code: the body's (None: 0), 0 after a stop
    request, or EXIT_STARTUP with one line `<name>: error: <message>` on stderr when the body raises one of
    `startup_errors` (the shutdown has run by then). A `whole_process` program (a console script) leaves `signals`
    ignored once shut down, and prints every thread's stack if it is still running `stuck_exit_dump_sec` after a stop
    request or the end of its body; in-process callers (tests) pass False to get their previous handlers back."""
    try:
        with ros_program(
            name,
            args=args,
            signals=signals,
            ignore_signals_after=whole_process,
            stuck_exit_dump_sec=stuck_exit_dump_sec if whole_process else None,
        ) as program:
            code = body(program)
    except startup_errors as exc:
        sys.stderr.write(f'{name}: error: {exc}\n')
        return EXIT_STARTUP
    except (KeyboardInterrupt, ExternalShutdownException):
        return EXIT_OK
    return EXIT_OK if code is None else code
