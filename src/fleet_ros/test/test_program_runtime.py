"""fleet_ros.runtime: a signal only asks the program to stop; the work stops, lifecycle nodes shut down, nodes are
destroyed, the executor and then the context shut down, every step while the context is valid; exit code 0 after
a signal, EXIT_STARTUP and one line after a startup error."""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import subprocess
import sys
import textwrap
from typing import Any, cast

import pytest
from rclpy._rclpy_pybind11 import InvalidHandle
from rclpy.action import ActionClient, ActionServer
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node

from fleet_interfaces.action import RunMission
from fleet_ros.runtime import EXIT_STARTUP, RosProgram, ros_program, run_program, shut_down_in_order

# -- the order, with stand-ins (no rclpy) ------------------------------------------------------------------------


class FakeContext:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.valid = True

    def ok(self) -> bool:
        return self.valid

    def try_shutdown(self) -> None:
        self.log.append('context shutdown')
        self.valid = False


class FakeNode:
    def __init__(self, name: str, log: list[str], context: FakeContext) -> None:
        self.name, self.log, self.context = name, log, context
        self.waitables: list[object] = []

    def destroy_node(self) -> None:
        self.log.append(f'destroy {self.name} (context valid: {self.context.ok()})')


class FakeExecutor:
    def __init__(self, log: list[str], context: FakeContext) -> None:
        self.log, self.context = log, context

    def remove_node(self, node: Node) -> None:
        self.log.append(f'remove {cast(FakeNode, node).name}')

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        self.log.append(f'executor shutdown (context valid: {self.context.ok()})')
        return True


def test_nodes_leave_the_executor_and_are_destroyed_last_first_then_the_executor_then_the_context() -> None:
    log: list[str] = []
    context = FakeContext(log)
    nodes = [FakeNode('first', log, context), FakeNode('second', log, context)]
    shut_down_in_order(cast(list[Node], nodes), FakeExecutor(log, context), cast(Context, context))
    assert log == [
        'remove second',
        'destroy second (context valid: True)',
        'remove first',
        'destroy first (context valid: True)',
        'executor shutdown (context valid: True)',
        'context shutdown',
    ]


class BrokenNode(FakeNode):
    def destroy_node(self) -> None:
        raise RuntimeError('destroy failed')


def test_the_context_is_shut_down_even_when_a_step_before_it_fails() -> None:
    log: list[str] = []
    context = FakeContext(log)
    with pytest.raises(RuntimeError, match='destroy failed'):
        shut_down_in_order(
            cast(list[Node], [BrokenNode('broken', log, context)]), FakeExecutor(log, context), cast(Context, context)
        )
    assert log == ['remove broken', 'context shutdown']


# -- in this process, with a private context ---------------------------------------------------------------------


class RecordingNode(Node):
    def __init__(self, name: str, log: list[str], *, context: Context) -> None:
        super().__init__(name, context=context)
        self.log = log

    def destroy_node(self) -> None:
        self.log.append(f'destroy {self.get_name()} (context valid: {self.context.ok()})')
        super().destroy_node()


class Stepper(LifecycleNode):
    def __init__(self, log: list[str], *, context: Context) -> None:
        super().__init__('runtime_test_stepper', context=context)
        self.log = log

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.log.append(f'on_shutdown from {state.label} (context valid: {self.context.ok()})')
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self.log.append(f'destroy {self.get_name()} (context valid: {self.context.ok()})')
        super().destroy_node()


def test_sigint_stops_the_spin_loop_then_shuts_down_in_order_and_exits_0() -> None:
    log: list[str] = []
    seen: dict[str, Any] = {}

    def body(program: RosProgram) -> None:
        stepper = program.add_node(Stepper(log, context=program.context))
        stepper.trigger_configure()
        stepper.trigger_activate()
        ticker = program.add_node(RecordingNode('runtime_test_ticker', log, context=program.context))
        ticks: list[int] = []

        def tick() -> None:
            ticks.append(1)
            if len(ticks) == 3:
                os.kill(os.getpid(), signal.SIGINT)

        ticker.create_timer(0.01, tick)
        program.spin()
        log.append('spin returned')
        seen.update(reason=program.stop_reason, context=program.context, valid=program.context.ok())

    before = signal.getsignal(signal.SIGINT)
    assert run_program('runtime_test', body, args=[], whole_process=False) == 0
    assert seen['reason'] == 'SIGINT'
    assert seen['valid'], 'the signal shut the context down under the program'
    assert log == [
        'spin returned',
        'on_shutdown from active (context valid: True)',
        'destroy runtime_test_ticker (context valid: True)',
        'destroy runtime_test_stepper (context valid: True)',
    ]
    assert not seen['context'].ok()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_signal_cancels_the_async_work_and_the_cleanup_runs_while_the_nodes_still_spin() -> None:
    log: list[str] = []
    seen: dict[str, Any] = {}

    def body(program: RosProgram) -> None:
        node = program.add_node(RecordingNode('runtime_test_async', log, context=program.context))
        loop = program.loop
        ticked: list[asyncio.Future[None]] = []

        def tick() -> None:
            for future in list(ticked):
                loop.call_soon_threadsafe(lambda f=future: f.done() or f.set_result(None))

        node.create_timer(0.01, tick)

        async def start() -> None:
            os.kill(os.getpid(), signal.SIGINT)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                log.append(f'work cancelled (context valid: {program.context.ok()})')
                raise

        async def cleanup() -> None:
            ticked.append(loop.create_future())
            await asyncio.wait_for(ticked[0], 10)  # a timer callback after the stop: the spin thread still spins
            log.append(f'cleanup saw a tick (context valid: {program.context.ok()})')

        program.run_async(start, cleanup=cleanup)
        log.append('run_async returned')
        seen.update(reason=program.stop_reason, context=program.context)

    assert run_program('runtime_test', body, args=[], whole_process=False) == 0
    assert seen['reason'] == 'SIGINT'
    assert log == [
        'work cancelled (context valid: True)',
        'cleanup saw a tick (context valid: True)',
        'run_async returned',
        'destroy runtime_test_async (context valid: True)',
    ]
    assert not seen['context'].ok()


def test_work_that_winds_itself_down_is_awaited_not_cancelled() -> None:
    log: list[str] = []

    def body(program: RosProgram) -> None:
        async def start() -> None:
            os.kill(os.getpid(), signal.SIGINT)
            await program.stop_event.wait()
            try:
                for step in range(3):  # a close that awaits (as a server's close does)
                    await asyncio.sleep(0)
                    log.append(f'closing {step}')
            except asyncio.CancelledError:
                log.append('cancelled while closing')
                raise

        program.run_async(start, cancel_on_stop=False)

    assert run_program('runtime_test', body, args=[], whole_process=False) == 0
    assert log == ['closing 0', 'closing 1', 'closing 2']


class ConfigProblem(Exception):
    pass


def test_a_startup_error_is_one_line_on_stderr_and_exit_code_2(capfd: pytest.CaptureFixture[str]) -> None:
    log: list[str] = []
    seen: dict[str, Any] = {}

    def body(program: RosProgram) -> None:
        program.add_node(RecordingNode('runtime_test_startup', log, context=program.context))
        seen['context'] = program.context
        raise ConfigProblem('fleet_config: /nowhere.yaml: no such file')

    code = run_program('runtime_test', body, args=[], whole_process=False, startup_errors=(ConfigProblem,))
    assert code == EXIT_STARTUP == 2
    assert capfd.readouterr().err == 'runtime_test: error: fleet_config: /nowhere.yaml: no such file\n'
    assert log == ['destroy runtime_test_startup (context valid: True)']
    assert not seen['context'].ok()


def test_a_startup_error_of_the_async_work_ends_the_program_with_exit_code_2(
    capfd: pytest.CaptureFixture[str],
) -> None:
    def body(program: RosProgram) -> None:
        async def start() -> None:
            raise ConfigProblem('acl_file: unreadable')

        program.run_async(start)

    code = run_program('runtime_test', body, args=[], whole_process=False, startup_errors=(ConfigProblem,))
    assert code == EXIT_STARTUP == 2
    assert capfd.readouterr().err == 'runtime_test: error: acl_file: unreadable\n'


def test_other_errors_propagate_after_the_shutdown() -> None:
    seen: dict[str, Any] = {}

    def body(program: RosProgram) -> None:
        seen['context'] = program.context
        raise RuntimeError('a bug')

    with pytest.raises(RuntimeError, match='a bug'):
        run_program('runtime_test', body, args=[], whole_process=False, startup_errors=(ConfigProblem,))
    assert not seen['context'].ok()


def test_a_whole_process_program_ignores_stop_signals_once_shut_down() -> None:
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert run_program('runtime_test', lambda _program: None, args=[]) == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        faulthandler.cancel_dump_traceback_later()  # the stuck-exit dump is for a process that ends, not this one
        for sig, handler in previous.items():
            signal.signal(sig, handler)


PROGRAM = textwrap.dedent(
    """
    import os
    import signal
    import sys
    from rclpy.node import Node
    from fleet_ros.runtime import run_program

    def body(program):
        node = program.add_node(Node('runtime_test_sigterm', context=program.context))
        node.create_timer(0.01, lambda: node.get_logger().info('tick', once=True))
        print('ready', flush=True)
        program.spin()
        node.get_logger().info(f'stopping on {program.stop_reason}')

    code = run_program('runtime_test', body, args=[])
    os.kill(os.getpid(), signal.SIGTERM)  # late, as ros2 launch's escalation can be: the exit stays clean
    sys.exit(code)
    """
)


def _signal_when_ready(program: str, sig: signal.Signals) -> tuple[int, str]:
    """Run `program` in a process, send it `sig` once it prints "ready"; its exit code and stderr."""
    proc = subprocess.Popen([sys.executable, '-c', program], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == 'ready'
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def test_sigterm_to_a_program_process_is_an_orderly_exit_0() -> None:
    code, err = _signal_when_ready(PROGRAM, signal.SIGTERM)
    assert code == 0, err
    assert 'stopping on SIGTERM' in err
    assert 'context is invalid' not in err
    assert 'Traceback' not in err


STUCK_PROGRAM = textwrap.dedent(
    """
    import time
    from rclpy.node import Node
    from fleet_ros.runtime import run_program

    def stuck_on_the_way_down():
        time.sleep(5)  # the stand-in for a shutdown step that does not return (a native call waiting forever)

    def body(program):
        program.add_node(Node('runtime_test_stuck', context=program.context))
        print('ready', flush=True)
        program.spin()
        stuck_on_the_way_down()

    run_program('runtime_test', body, args=[], stuck_exit_dump_sec=0.5)
    """
)


def test_a_program_stuck_after_a_stop_request_prints_where_it_is_stuck() -> None:
    code, err = _signal_when_ready(STUCK_PROGRAM, signal.SIGINT)
    assert code == 0, err
    assert 'Timeout (0:00:00.500000)!' in err, err
    assert 'stuck_on_the_way_down' in err, err


STUCK_SHUTDOWN_PROGRAM = textwrap.dedent(
    """
    import time
    from rclpy.node import Node
    from fleet_ros.runtime import run_program

    class NodeStuckInDestroy(Node):
        def destroy_node(self):
            time.sleep(5)  # the stand-in for an endpoint teardown that does not return
            super().destroy_node()

    def body(program):
        program.add_node(NodeStuckInDestroy('runtime_test_stuck', context=program.context))

    # No stop request: the body returns, and the ordered shutdown is where the program is stuck.
    run_program('runtime_test', body, args=[], stuck_exit_dump_sec=0.5)
    """
)


def test_a_program_stuck_in_its_shutdown_after_its_body_returned_prints_where_it_is_stuck() -> None:
    proc = subprocess.run(
        [sys.executable, '-c', STUCK_SHUTDOWN_PROGRAM], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert 'Timeout (0:00:00.500000)!' in proc.stderr, proc.stderr
    assert 'destroy_node' in proc.stderr, proc.stderr


CRASHING_PROGRAM = textwrap.dedent(
    """
    import ctypes
    from fleet_ros.runtime import ros_program

    def body_that_crashes():
        ctypes.string_at(0)  # a read of address 0: SIGSEGV, as a crash in a native library would be

    # A short-lived program: its executor does not turn the fault handler on by itself (rclpy's EventsExecutor does).
    with ros_program('runtime_test', args=[], short_lived=True):
        body_that_crashes()
    """
)


def test_a_crashing_program_prints_the_python_stack_of_the_crash() -> None:
    env = {key: value for key, value in os.environ.items() if key != 'PYTHONFAULTHANDLER'}
    proc = subprocess.run(
        [sys.executable, '-c', CRASHING_PROGRAM], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert proc.returncode == -signal.SIGSEGV
    assert 'Segmentation fault' in proc.stderr
    assert 'body_that_crashes' in proc.stderr, proc.stderr


def test_the_nodes_action_clients_and_servers_are_destroyed_with_them() -> None:
    # rclpy's destroy_node leaves them to the garbage collector, which freed one after the context was gone: a hang
    with ros_program('runtime_test', args=[]) as program:
        node = program.add_node(Node('runtime_test_actions', context=program.context))
        client = ActionClient(node, RunMission, '/runtime_test/mission')
        server = ActionServer(node, RunMission, '/runtime_test/mission', lambda handle: RunMission.Result())
        assert {client, server} <= set(node.waitables)
    assert not [w for w in node.waitables if isinstance(w, (ActionClient, ActionServer))]
    with pytest.raises(InvalidHandle):
        client.server_is_ready()


def test_a_short_lived_program_waits_on_a_wait_set_and_the_others_on_events() -> None:
    with ros_program('runtime_test', args=[], short_lived=True) as program:
        assert type(program.executor) is SingleThreadedExecutor
    with ros_program('runtime_test', args=[]) as program:
        assert type(program.executor).__name__ == 'EventsExecutor'
