"""`fleet_supervisor`: a lifecycle supervisor for a site's shard orchestrators, in the spirit of nav2's lifecycle
manager. It brings the managed nodes up in order through the standard lifecycle services (configure -> activate),
checks each one every period (get_state is the heartbeat), re-drives a node that fell out of ACTIVE, restarts a
node it spawned that stopped answering or died, and on shutdown takes them down in reverse (deactivate -> cleanup).
A spawned orchestrator that exits with code 2 refused its configuration (e.g. wrong shard): it is not restarted.
A node gets `startup_timeout_sec` (60 s) to offer its lifecycle services, since a process starting on a loaded robot
computer can take many seconds; after that each answer gets `transition_timeout_sec` (10 s)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.client import Client
from rclpy.executors import Executor
from rclpy.node import Node

from fleet_core import topics
from fleet_core.config import ConfigError, load_fleet_config
from fleet_ros.params import declare
from fleet_ros.processes import let_sigint_reach_children, start_child, stop_child
from fleet_ros.runtime import RosProgram, run_program

EXIT_REFUSED = 2
STOP_GRACE_SEC = 5.0


class SupervisorError(RuntimeError):
    """A managed node could not be brought to the wanted state; the message names it."""


@dataclass
class Managed:
    """One managed lifecycle node (fully qualified name) and, when spawned here, its process."""

    name: str
    argv: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    misses: int = 0
    restarts: int = 0
    given_up: str = ''
    get_state: Client | None = None
    change_state: Client | None = None


class LifecycleSupervisor:
    def __init__(
        self,
        node: Node,
        executor: Executor,
        managed: Sequence[Managed],
        *,
        transition_timeout_sec: float,
        missed_checks_restart: int,
        startup_timeout_sec: float = 60.0,
    ) -> None:
        self.node = node
        self.executor = executor
        self.managed = list(managed)
        self.timeout = transition_timeout_sec
        self.startup_timeout = startup_timeout_sec
        self.missed_checks_restart = missed_checks_restart
        self.log = node.get_logger()
        let_sigint_reach_children()
        for m in self.managed:
            m.get_state = node.create_client(GetState, f'{m.name}/get_state')
            m.change_state = node.create_client(ChangeState, f'{m.name}/change_state')

    # -- service calls (spun from the main thread, never from a callback) ---------------------------------

    def _call(self, client: Client, request: Any, timeout: float) -> Any | None:
        deadline = time.monotonic() + timeout
        while not client.service_is_ready():
            if time.monotonic() > deadline:
                return None
            self.executor.spin_once(timeout_sec=0.05)
        future = client.call_async(request)
        while not future.done():
            if time.monotonic() > deadline:
                client.remove_pending_request(future)
                return None
            self.executor.spin_once(timeout_sec=0.05)
        return future.result()

    @staticmethod
    def _clients(m: Managed) -> tuple[Client, Client]:
        """The node's get_state and change_state clients."""
        if m.get_state is None or m.change_state is None:
            raise SupervisorError(f'{m.name}: no lifecycle clients (not started by this supervisor)')
        return m.get_state, m.change_state

    def state_of(self, m: Managed, timeout: float) -> int | None:
        reply = self._call(self._clients(m)[0], GetState.Request(), timeout)
        return None if reply is None else int(reply.current_state.id)

    def _transition(self, m: Managed, transition: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition))
        reply = self._call(self._clients(m)[1], request, self.timeout)
        return bool(reply is not None and reply.success)

    # -- bring up / down ---------------------------------------------------------------------------------

    def wait_offered(self, m: Managed) -> None:
        """Wait until the node offers its lifecycle services: a process just spawned on a loaded machine may take
        many seconds to import and start, which is no reason to give up on it. Raises SupervisorError when a process
        spawned here exits first, or after startup_timeout_sec."""
        clients = self._clients(m)
        deadline = time.monotonic() + self.startup_timeout
        while not all(client.service_is_ready() for client in clients):
            if m.process is not None and m.process.poll() is not None:
                raise SupervisorError(
                    f'{m.name}: exited with code {m.process.returncode} before offering its lifecycle services'
                )
            if time.monotonic() > deadline:
                raise SupervisorError(f'{m.name}: lifecycle services not offered within {self.startup_timeout}s')
            self.executor.spin_once(timeout_sec=0.05)

    def ensure_active(self, m: Managed) -> None:
        """Raises SupervisorError when the node does not come up, does not answer or refuses a transition."""
        self.wait_offered(m)
        for _ in range(4):
            state = self.state_of(m, self.timeout)
            if state is None:
                raise SupervisorError(f'{m.name}: no answer from its lifecycle services within {self.timeout}s')
            if state == State.PRIMARY_STATE_ACTIVE:
                m.misses = 0
                return
            transition = {
                State.PRIMARY_STATE_UNCONFIGURED: Transition.TRANSITION_CONFIGURE,
                State.PRIMARY_STATE_INACTIVE: Transition.TRANSITION_ACTIVATE,
            }.get(state)
            if transition is None:
                raise SupervisorError(f'{m.name}: in lifecycle state {state}, cannot be activated')
            if not self._transition(m, transition):
                raise SupervisorError(f'{m.name}: transition {transition} refused (see its log)')
            self.log.info(f'{m.name}: transition {transition} done')
        raise SupervisorError(f'{m.name}: did not reach ACTIVE')

    def bring_up(self) -> None:
        for m in self.managed:
            self.ensure_active(m)
            self.log.info(f'{m.name}: ACTIVE')

    def bring_down(self) -> None:
        for m in reversed(self.managed):
            if m.given_up:
                continue
            state = self.state_of(m, 1.0)
            if state == State.PRIMARY_STATE_ACTIVE:
                self._transition(m, Transition.TRANSITION_DEACTIVATE)
                state = State.PRIMARY_STATE_INACTIVE
            if state == State.PRIMARY_STATE_INACTIVE:
                self._transition(m, Transition.TRANSITION_CLEANUP)
            self.log.info(f'{m.name}: brought down')

    # -- monitoring --------------------------------------------------------------------------------------

    def check(self, period: float) -> None:
        """One round of heartbeats over every managed node."""
        for m in self.managed:
            if m.given_up:
                continue
            if m.process is not None and m.process.poll() is not None:
                self._handle_exit(m)
                continue
            state = self.state_of(m, period)
            if state is None:
                m.misses += 1
                self.log.warning(f'{m.name}: missed heartbeat {m.misses}/{self.missed_checks_restart}')
                if m.misses >= self.missed_checks_restart:
                    self._restart(m, 'stopped answering')
            elif state != State.PRIMARY_STATE_ACTIVE:
                self.log.warning(f'{m.name}: found in state {state}; re-activating')
                self._recover(m)
            else:
                m.misses = 0

    def _recover(self, m: Managed) -> None:
        try:
            self.ensure_active(m)
        except SupervisorError as exc:
            self.log.error(str(exc))

    def _handle_exit(self, m: Managed) -> None:
        if m.process is None:
            raise SupervisorError(f'{m.name}: has no process to reap')
        code = m.process.returncode
        if code == EXIT_REFUSED:
            m.given_up = f'exited with code {code}: it refused its configuration (see its log); not restarted'
            self.log.fatal(f'{m.name}: {m.given_up}')
            return
        self._restart(m, f'exited with code {code}')

    def _restart(self, m: Managed, why: str) -> None:
        if not m.argv:
            self.log.error(f'{m.name}: {why}; not spawned by this supervisor, cannot restart it')
            m.misses = 0
            return
        stop(m)
        m.restarts += 1
        self.log.warning(f'{m.name}: {why}; restarting (restart {m.restarts})')
        spawn(m)
        m.misses = 0
        self._recover(m)


def spawn(m: Managed) -> None:
    # A session of its own so the supervisor's SIGINT does not reach it before the ordered bring-down.
    m.process = start_child(m.argv)


def stop(m: Managed) -> None:
    """SIGINT by PID, then SIGKILL after a grace period."""
    if m.process is not None:
        stop_child(m.process, STOP_GRACE_SEC)


def managed_nodes(
    *, fleet_config: str, site: str, shards: Sequence[str], replicas: int, spawn_nodes: bool, names: Sequence[str]
) -> list[Managed]:
    """Explicit `names`, else orchestrator_<i> in /fleet/<site>/<shard> for each shard (and replica) of the site.
    Raises ConfigError for an unknown site or shard."""
    if names:
        return [Managed(name) for name in names]
    fleet = load_fleet_config(fleet_config or None)
    chosen = [s for s in fleet.shards_of(site) if not shards or s.shard_id in shards]
    unknown = sorted(set(shards) - {s.shard_id for s in chosen})
    if unknown:
        raise ConfigError(f'{fleet.source}: site {site!r} has no shard(s) {", ".join(unknown)}')
    result = []
    for replica in range(replicas):
        for shard in chosen:
            namespace = topics.shard_prefix(shard.site_id, shard.shard_id)
            node_name = f'orchestrator_{replica}'
            argv = []
            if spawn_nodes:
                argv = [
                    'shard_orchestrator', '--ros-args', '-r', f'__ns:={namespace}', '-r', f'__node:={node_name}',
                    '-p', f'fleet_config:={fleet.source}', '-p', f'site_id:={shard.site_id}',
                    '-p', f'shard_id:={shard.shard_id}', '-p', 'autostart:=false',
                    '-p', f'replica_index:={replica}',  # distinct epoch slots per replica of a shard
                ]  # fmt: skip
            result.append(Managed(f'{namespace}/{node_name}', argv))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return run_program(
        'fleet_supervisor', _run, args=list(argv) if argv is not None else None, startup_errors=(ConfigError,)
    )


def _run(program: RosProgram) -> int | None:
    # SIGINT/SIGTERM only ask the loop to stop (fleet_ros.runtime): the context stays valid for the bring-down.
    node = program.add_node(Node('fleet_supervisor', context=program.context))
    config = declare(node, 'fleet_config', os.environ.get('FLEETLANES_CONFIG', ''), 'fleet layout YAML')
    site = declare(node, 'site_id', 'site_a', 'site whose shard orchestrators are managed')
    shards = declare(node, 'shard_ids', [], 'shards to manage (empty: every shard of the site)')
    names = declare(node, 'managed_nodes', [], 'explicit lifecycle node names in bring-up order (overrides shards)')
    replicas = declare(node, 'replicas', 1, 'orchestrators per shard (2 = leader + standby); brought up in turn')
    spawn_nodes = declare(node, 'spawn', False, 'start the orchestrator processes too (and restart them)')
    period = declare(node, 'check_period_sec', 1.0, 'seconds between heartbeats (get_state) of every node')
    misses = declare(node, 'missed_checks_restart', 3, 'missed heartbeats before a spawned node is restarted')
    timeout = declare(node, 'transition_timeout_sec', 10.0, 'wait for a lifecycle service answer (s)')
    startup = declare(node, 'startup_timeout_sec', 60.0, 'wait for a (re)started node to offer its lifecycle services')
    managed = managed_nodes(
        fleet_config=config, site=site, shards=shards, replicas=replicas, spawn_nodes=spawn_nodes, names=names
    )
    supervisor: LifecycleSupervisor | None = None
    try:
        for m in managed:
            if m.argv:
                spawn(m)
        supervisor = LifecycleSupervisor(
            node,
            program.executor,
            managed,
            transition_timeout_sec=timeout,
            missed_checks_restart=misses,
            startup_timeout_sec=startup,
        )
        supervisor.bring_up()
        node.get_logger().info(f'{len(managed)} node(s) ACTIVE; checking every {period}s')
        while program.running:
            started = time.monotonic()
            supervisor.check(period)
            program.spin_for(period - (time.monotonic() - started))
    except SupervisorError as exc:
        node.get_logger().fatal(f'bring-up failed: {exc}')
        return 1
    finally:
        if supervisor is not None and program.context.ok():
            supervisor.bring_down()
        for m in reversed(managed):
            stop(m)
    return None


if __name__ == '__main__':
    sys.exit(main())
