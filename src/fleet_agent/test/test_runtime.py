"""AgentRuntime on a real asyncio loop, without ROS: acks, delayed ACCEPTED, e-stop, deadlines, executor errors."""

import asyncio
import sqlite3
import time

from fleet_agent.executors import ExecutionResult, SleepExecutor
from fleet_agent.runtime import AgentRuntime, AgentState
from fleet_core.config import IntakeSettings
from fleet_core.dedup_store import DedupStore
from fleet_core.intake import CommandIntake
from fleet_core.kinds import KindRegistry
from fleet_core.model import AckStatus, Command, Priority
from harness.wait import async_wait_for


class Sink:
    def __init__(self):
        self.acks = []

    def publish_ack(self, ack):
        self.acks.append(ack)

    def statuses(self, command_id):
        return [a.status for a in self.acks if a.command_id == command_id]


def intake_on(store, agent='r1'):
    return CommandIntake(
        agent_id=agent, shard_id='z', store=store, kinds=KindRegistry(), settings=IntakeSettings(), clock=time.time
    )


def make(tmp_path, executor, accept_delay=0.05, trace=None):
    sink = Sink()
    intake = intake_on(DedupStore(tmp_path / 'r1.sqlite'))
    runtime = AgentRuntime(
        site_id='s',
        intake=intake,
        executor=executor,
        sink=sink,
        clock=time.time,
        accept_ack_delay_sec=accept_delay,
        **({'trace': trace} if trace is not None else {}),
    )
    return runtime, sink


def cmd(command_id, seq, kind='noop', args='{}', ttl=5.0, priority=Priority.NORMAL):
    now = time.time()
    return Command(command_id, 't', 's', 'z', 'r1', seq, 1, priority, now, now + ttl, kind, args, 1)


async def settle(runtime):
    await async_wait_for(lambda: runtime.state != AgentState.BUSY, 10.0, what='the runtime to finish its command')


def test_quick_command_gets_only_its_final_ack(tmp_path):
    async def scenario():
        runtime, sink = make(tmp_path, SleepExecutor(0.0))
        runtime.on_command(cmd('c1', 1))
        await settle(runtime)
        return sink.statuses('c1')

    assert asyncio.run(scenario()) == [AckStatus.SUCCEEDED]


def test_slow_command_is_accepted_then_succeeds_and_redelivery_is_answered_from_the_store(tmp_path):
    async def scenario():
        runtime, sink = make(tmp_path, SleepExecutor(0.15))
        runtime.on_command(cmd('c1', 1))
        await settle(runtime)
        runtime.on_command(cmd('c1', 1))
        return sink.statuses('c1'), runtime.executions

    statuses, executions = asyncio.run(scenario())
    assert statuses == [AckStatus.ACCEPTED, AckStatus.SUCCEEDED, AckStatus.SUCCEEDED]
    assert executions == 1


def test_estop_cancels_running_work_and_refuses_new_work(tmp_path):
    async def scenario():
        runtime, sink = make(tmp_path, SleepExecutor(5.0))
        runtime.on_command(cmd('c1', 1))
        # ACCEPTED goes out only for a command still running after accept_delay: c1 is executing.
        await async_wait_for(lambda: sink.statuses('c1') == [AckStatus.ACCEPTED], 5.0, what='c1 executing')
        runtime.on_estop(True, revision=1)
        await settle(runtime)
        runtime.on_command(cmd('c2', 2))
        runtime.on_command(cmd('c3', 3, kind='stop', priority=Priority.SAFETY))
        await settle(runtime)
        return sink, runtime.state

    sink, state = asyncio.run(scenario())
    assert sink.statuses('c1')[-1] == AckStatus.CANCELLED
    assert sink.statuses('c2') == [AckStatus.REJECTED_ESTOPPED]
    assert sink.statuses('c3') == [AckStatus.SUCCEEDED]
    assert state == AgentState.ESTOPPED


def test_estop_in_the_iteration_that_started_a_command_still_ends_it_cancelled(tmp_path):
    # The e-stop is handled before the command's task took its first step: asyncio then never runs the task's
    # coroutine. The command must still end CANCELLED, durably (a re-delivery gets the same answer), never run, and
    # leave the agent idle, not "already executing" until an agent restart.
    async def scenario():
        runtime, sink = make(tmp_path, SleepExecutor(5.0))
        runtime.on_command(cmd('c1', 1))
        runtime.on_estop(True, revision=1)
        await async_wait_for(lambda: sink.statuses('c1'), 5.0, what='a final ack for c1')
        runtime.on_command(cmd('c1', 1))
        return sink, runtime.executions, runtime.heartbeat().active_command_id

    sink, executions, active = asyncio.run(scenario())
    assert sink.statuses('c1') == [AckStatus.CANCELLED, AckStatus.CANCELLED]
    assert 'e-stop engaged before execution started' in sink.acks[0].detail
    assert executions == 0
    assert active == ''


def test_pause_command_gates_normal_work_until_resume(tmp_path):
    async def scenario():
        runtime, sink = make(tmp_path, SleepExecutor(0.0))
        runtime.on_command(cmd('p', 1, kind='pause', priority=Priority.HIGH))
        await settle(runtime)
        paused_state = runtime.state
        runtime.on_command(cmd('n1', 2))
        runtime.on_command(cmd('h', 2, priority=Priority.HIGH))
        await settle(runtime)
        runtime.on_command(cmd('r', 3, kind='resume', priority=Priority.HIGH))
        await settle(runtime)
        runtime.on_command(cmd('n2', 4))
        await settle(runtime)
        return paused_state, runtime.state, sink, runtime.executor.executed

    paused_state, state, sink, executed = asyncio.run(scenario())
    assert paused_state == AgentState.PAUSED and state == AgentState.IDLE
    assert sink.statuses('p') == [AckStatus.SUCCEEDED]
    assert sink.statuses('n1') == [AckStatus.REJECTED_PAUSED]
    assert sink.statuses('h') == [AckStatus.SUCCEEDED] and sink.statuses('n2') == [AckStatus.SUCCEEDED]
    assert executed == ['h', 'n2']


def test_agent_hops_receive_start_finish(tmp_path):
    hops = []

    async def scenario():
        runtime, sink = make(tmp_path, SleepExecutor(0.0), trace=lambda *hop: hops.append(hop))
        runtime.on_command(cmd('c1', 1))
        await settle(runtime)
        runtime.on_command(cmd('c1', 1))  # a re-delivery: received again, answered from the store
        runtime.on_estop(True, 1)
        runtime.on_command(cmd('c2', 2))
        await async_wait_for(lambda: sink.statuses('c2'), 5.0, what='the answer to c2')
        return sink

    sink = asyncio.run(scenario())
    seen = [(hop.name, command.command_id, status) for hop, command, status, _ in hops]
    assert seen == [
        ('RECEIVE', 'c1', 'ACCEPTED'),
        ('START', 'c1', ''),
        ('FINISH', 'c1', 'SUCCEEDED'),
        ('RECEIVE', 'c1', 'SUCCEEDED'),
        ('RECEIVE', 'c2', 'REJECTED_ESTOPPED'),
    ]
    # FINISH is traced once the final status is durable, right before the final ack goes out.
    assert sink.statuses('c1') == [AckStatus.SUCCEEDED, AckStatus.SUCCEEDED]


def test_deadline_stops_a_running_command(tmp_path):
    async def scenario():
        runtime, sink = make(tmp_path, SleepExecutor(5.0))
        runtime.on_command(cmd('c1', 1, ttl=0.1))
        await settle(runtime)
        return sink.acks[-1]

    final = asyncio.run(scenario())
    assert final.status == AckStatus.FAILED and 'deadline' in final.detail


class Broken:
    async def execute(self, command, args):
        raise RuntimeError('motor driver fault')


def test_executor_exception_is_a_definite_failure(tmp_path):
    async def scenario():
        runtime, sink = make(tmp_path, Broken())
        runtime.on_command(cmd('c1', 1))
        await settle(runtime)
        return sink.acks[-1]

    final = asyncio.run(scenario())
    assert final.status == AckStatus.FAILED and 'motor driver fault' in final.detail


def test_group_commit_executes_and_acks_only_after_the_commit(tmp_path):
    from fleet_agent.commit import GroupCommitter
    from fleet_core.dedup_store import DedupDatabase

    class Probe:
        """Looks through a second connection: only committed rows are visible there."""

        def __init__(self, path):
            self.reader = sqlite3.connect(path)
            self.durable_at_start = []

        async def execute(self, command, args):
            row = self.reader.execute(
                'SELECT 1 FROM outcomes WHERE agent_id = ? AND command_id = ?', (command.agent_id, command.command_id)
            ).fetchone()
            self.durable_at_start.append(row is not None)
            return ExecutionResult(True)

    async def scenario():
        db = DedupDatabase(tmp_path / 'host.sqlite', group_commit=True)
        committer = GroupCommitter(db, asyncio.get_running_loop())
        sink = Sink()
        probe = Probe(tmp_path / 'host.sqlite')
        runtimes = []
        for agent in ('r1', 'r2', 'r3'):
            intake = intake_on(DedupStore(db, agent), agent)
            runtimes.append(
                AgentRuntime(
                    site_id='s',
                    intake=intake,
                    executor=probe,
                    sink=sink,
                    clock=time.time,
                    after_commit=committer.after_commit,
                )
            )
        for runtime in runtimes:
            now = time.time()
            runtime.on_command(
                Command('c1', 't', 's', 'z', runtime.agent_id, 1, 1, Priority.NORMAL, now, now + 5, 'noop')
            )
        assert sink.acks == [] and db.pending  # nothing acted on before the commit
        for runtime in runtimes:
            await settle(runtime)
        await asyncio.sleep(0)
        return probe, sink, committer

    probe, sink, committer = asyncio.run(scenario())
    assert probe.durable_at_start == [True, True, True]
    assert [a.status for a in sink.acks] == [AckStatus.SUCCEEDED] * 3
    assert committer.commits <= 4  # the three starts share one commit; outcomes share the following turns


def test_a_failing_commit_refuses_the_command_and_never_executes_it(tmp_path):
    """A full disk (SQLite's page limit reached) at the group commit: the commands of that turn are refused with the
    reason and never run; the agent stays in safe mode after."""
    from fleet_agent.commit import GroupCommitter
    from fleet_core.dedup_store import DedupDatabase

    async def scenario():
        db = DedupDatabase(tmp_path / 'host.sqlite', group_commit=True)
        filler = DedupStore(db, 'filler')
        for seq in range(1, 300):  # another agent's history fills the pages, so the limit is reached soon
            filler.begin(cmd(f'f{seq}', seq))
        db.commit()
        pages = db._conn('test').execute('PRAGMA page_count').fetchone()[0]
        db._conn('test').execute(f'PRAGMA max_page_count = {pages}')  # the disk is full from now on
        committer = GroupCommitter(db, asyncio.get_running_loop())
        executor = SleepExecutor(0.0)
        sink = Sink()
        intake = intake_on(DedupStore(db, 'r1'))
        runtime = AgentRuntime(
            site_id='s',
            intake=intake,
            executor=executor,
            sink=sink,
            clock=time.time,
            after_commit=committer.after_commit,
        )
        for seq in range(1, 2000):
            runtime.on_command(cmd(f'c{seq}', seq))
            await asyncio.sleep(0)
            await settle(runtime)
            if intake.safe_mode:
                break
        runtime.on_command(cmd('after', 500))
        await async_wait_for(lambda: sink.statuses('after'), 5.0, what='the answer to the command after safe mode')
        return runtime, sink, executor

    runtime, sink, executor = asyncio.run(scenario())
    refused = [a for a in sink.acks if a.status == AckStatus.REJECTED_SAFE_MODE]
    assert refused, 'the page limit was never reached'
    assert 'full' in refused[0].detail
    assert refused[0].command_id not in executor.executed and 'after' not in executor.executed
    assert runtime.state == AgentState.SAFE_MODE
    succeeded = [a.command_id for a in sink.acks if a.status == AckStatus.SUCCEEDED]
    assert executor.executed == succeeded  # only acknowledged-durable work ran, each once


def test_an_operation_missed_while_down_is_applied_from_the_announcement(tmp_path):
    """The pause/resume command normally applies an operation; an agent that was down during the waves (its command
    expired) applies the latched announcement itself once the waves are over, and an older one never undoes a newer
    state."""
    from fleet_agent.runtime import Operation

    async def scenario():
        runtime, sink = make(tmp_path, SleepExecutor(0.0))
        runtime.operation_grace_sec = 0.05
        runtime.on_command(cmd('p', 1, kind='pause', priority=Priority.HIGH))
        await settle(runtime)
        paused_at = time.time()
        # The shard's latched history: an older resume (before this agent's pause) changes nothing. Twice the grace:
        # the loop runs timers in deadline order, so one applying it would have run before this sleep ends.
        runtime.on_operation(Operation(pause=False, starts_at=paused_at - 100, last_wave_at=paused_at - 99))
        await asyncio.sleep(2 * runtime.operation_grace_sec)
        still_paused = runtime.paused
        # A resume whose waves end in 1 s, and whose command never reaches this agent: applied after its last wave,
        # not before (read at twice the grace, and again when it is applied).
        waves_end = time.time() + 1.0
        runtime.on_operation(Operation(pause=False, starts_at=time.time(), last_wave_at=waves_end))
        await asyncio.sleep(2 * runtime.operation_grace_sec)
        paused_during_waves = runtime.paused or time.time() >= waves_end
        await async_wait_for(lambda: not runtime.paused, 10.0, what='the missed resume to be applied')
        resumed = time.time() >= waves_end
        runtime.on_command(cmd('n', 2))
        await settle(runtime)
        # A restarted agent (a fresh store) that missed a pause long over pauses itself at once.
        fresh, _ = make(tmp_path / 'fresh', SleepExecutor(0.0))
        fresh.on_operation(Operation(pause=True, starts_at=time.time() - 60, last_wave_at=time.time() - 59))
        await asyncio.sleep(0)
        return still_paused, paused_during_waves, resumed, sink, fresh.paused

    (tmp_path / 'fresh').mkdir()
    still_paused, paused_during_waves, resumed, sink, fresh_paused = asyncio.run(scenario())
    assert still_paused and paused_during_waves and resumed
    assert sink.statuses('n') == [AckStatus.SUCCEEDED]
    assert fresh_paused
