"""Helpers for the tests that launch the fleet with real `launch` (launch_pytest) and drive it with the ros2 CLI:
fleet layouts on disk, launch-file includes with their own argument scope, a probe node following the shards'
leases, statuses and heartbeats, orchestrator lifecycle states, and the processes a launch started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleet_core import topics
from fleet_interfaces.msg import Heartbeat, LeaderLease, ShardStatus
from fleet_ros import qos
from fleet_ros.convert import from_time
from harness.wait import WaitTimeout

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_DIR = ROOT / 'launch'

# lifecycle_msgs/msg/State ids
ACTIVE = 3
INACTIVE = 2


def write_layout(path: Path, site: str, shards: Mapping[str, Sequence[str]]) -> Path:
    """A fleet layout with the given shards and agent ids; params.yaml etc. are not copied (defaults apply)."""
    layout = {'sites': {site: {'shards': {shard: {'agents': list(agents)} for shard, agents in shards.items()}}}}
    path.write_text(yaml.safe_dump(layout))
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server a launch starts)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


def include(launch_file: str | Path, **arguments: str) -> Any:
    """The launch file with exactly these arguments, in a scope of its own (nothing forwarded from the includer, so
    its unknown-argument check sees only these)."""
    from launch.actions import GroupAction, IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    source = PythonLaunchDescriptionSource(str(launch_file))
    return GroupAction(
        [IncludeLaunchDescription(source, launch_arguments=list(arguments.items()))], scoped=True, forwarding=False
    )


def descendants(pid: int, *, recursive: bool = True) -> dict[int, str]:
    """{pid: command line} of every live process below `pid` (only its own children with recursive=False: what a
    launch started, without the workers a program such as `fleet_gateway --workers N` starts itself)."""
    import psutil

    found = {}
    for child in psutil.Process(pid).children(recursive=recursive):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found[child.pid] = ' '.join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
    return found


def in_this_domain() -> dict[int, str]:
    """{pid: command line} of every live process, other than this one, whose ROS_DOMAIN_ID is this session's (the
    conftest claims the domain exclusively, so these are what this session started, however they detached)."""
    import psutil

    domain = os.environ['ROS_DOMAIN_ID']
    found = {}
    for proc in psutil.process_iter(['pid']):
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get('ROS_DOMAIN_ID') == domain and proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = ' '.join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


TAG_ENV = 'FLEETLANES_LAUNCH_TEST'


def tag_action(tag: str) -> Any:
    """A launch action putting TAG_ENV=tag into the environment of every process the launch starts after it (their
    children inherit it), so `stop_tagged` finds them even after they detached."""
    from launch.actions import SetEnvironmentVariable

    return SetEnvironmentVariable(TAG_ENV, tag)


def tagged(tag: str) -> dict[int, str]:
    import psutil

    found = {}
    for proc in psutil.process_iter(['pid']):
        try:
            if proc.environ().get(TAG_ENV) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = ' '.join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_tagged(tag: str, grace: float = 5.0) -> dict[int, str]:
    """SIGINT every process carrying the tag, SIGKILL what outlives `grace`; returns what was still running (a test
    that failed half-way must not leave its fleet behind)."""
    import psutil

    left = tagged(tag)
    procs = []
    for pid in left:
        try:
            proc = psutil.Process(pid)
            proc.send_signal(signal.SIGINT)
            procs.append(proc)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)
    return left


def still_running(pids: Iterable[int]) -> list[int]:
    import psutil

    running = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            continue
    return running


@dataclass
class FleetProbe:
    """Follows leases, statuses and heartbeats of some shards of one site from an in-process node."""

    node: Any
    site: str
    shards: Sequence[str]
    leases: dict[str, list[LeaderLease]] = field(default_factory=dict)
    statuses: dict[str, list[ShardStatus]] = field(default_factory=dict)
    beats: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for shard in self.shards:
            self.leases[shard] = []
            self.statuses[shard] = []
            self.beats[shard] = set()
            self.node.create_subscription(
                LeaderLease, topics.shard_leader(self.site, shard), self.leases[shard].append, qos.LATCHED
            )
            self.node.create_subscription(
                ShardStatus, topics.shard_status(self.site, shard), self.statuses[shard].append, qos.LATCHED
            )
            self.node.create_subscription(
                Heartbeat,
                topics.shard_heartbeat(self.site, shard),
                lambda m, s=shard: self.beats[s].add(m.agent_id),
                qos.HEARTBEAT,
            )

    def leader(self, shard: str) -> tuple[str, int] | None:
        """(leader id, epoch) of the latest lease, or None before one arrives."""
        leases = self.leases[shard]
        return (leases[-1].leader_id, leases[-1].epoch) if leases else None


def _leases_text(leases: Sequence[LeaderLease]) -> str:
    return ', '.join(f'{lease.leader_id}@{lease.epoch} {lease.stamp.sec}.{lease.stamp.nanosec:09d}' for lease in leases)


def one_leader_at_a_time(leases: Sequence[LeaderLease], allowed: set[str]) -> str:
    """Check a shard's leases in arrival order (a slow machine may fail over meanwhile, which is allowed): every
    epoch has exactly one leader, one of `allowed`, and the latest lease is of the newest epoch. Returns the problem,
    or ''."""
    by_epoch: dict[int, set[str]] = {}
    for lease in leases:
        by_epoch.setdefault(lease.epoch, set()).add(lease.leader_id)
    # At a cold start on a loaded machine two replicas may both lead for a moment, before discovery shows each the
    # other's lease: their epochs differ by construction (slots) and agents fence the lower one. What must hold is
    # that the shard converges on its newest epoch: the latest lease carries the highest epoch seen.
    epochs = [lease.epoch for lease in leases]
    if epochs and epochs[-1] != max(epochs):
        return f'the latest lease is not of the newest epoch: {_leases_text(leases)}'
    for epoch, leaders in by_epoch.items():
        if len(leaders) != 1 or not leaders <= allowed:
            return f'epoch {epoch} claimed by {sorted(leaders)} (allowed: {sorted(allowed)}): {_leases_text(leases)}'
    return ''


def lapsed_before_another_led(leases: Sequence[LeaderLease], leader_id: str, lease_sec: float) -> bool:
    """Whether the first lease of another replica after `leader_id`'s (in arrival order) is stamped more than
    `lease_sec` after `leader_id`'s last one: its lease had lapsed (a leader starved of CPU, the documented limit),
    so the other replica took no live lease. False when no other replica led after it."""
    last = None
    for lease in leases:
        stamp = from_time(lease.stamp)
        if lease.leader_id == leader_id:
            last = stamp
        elif last is not None:
            return stamp - last > lease_sec
    return False


def settled_on_newest_epoch(leases: Sequence[LeaderLease], renewals: int = 4) -> bool:
    """Whether a shard's last `renewals` leases (in arrival order) are all of the newest epoch it has seen."""
    newest = max((lease.epoch for lease in leases), default=0)
    return len(leases) >= renewals and all(lease.epoch == newest for lease in leases[-renewals:])


def settle_on_one_leader(ros: Any, probe: FleetProbe, allowed: dict[str, set[str]], timeout: float = 30.0) -> None:
    """After a cold start: wait until each shard's last four leases are of the newest epoch it has seen (a loaded
    machine may let both replicas lead for a moment, before discovery shows each the other's lease; the lower epoch
    then steps down), then check every lease seen meanwhile with `one_leader_at_a_time`."""
    for shard in allowed:
        probe.leases[shard].clear()

    ros.spin_until(
        lambda: all(settled_on_newest_epoch(probe.leases[s]) for s in allowed),
        timeout,
        'four lease renewals of the newest epoch',
    )
    for shard, leaders in allowed.items():
        problem = one_leader_at_a_time(probe.leases[shard], leaders)
        assert not problem, f'{shard}: {problem}'


def lifecycle_state(ros: Any, node_name: str, timeout: float = 10.0) -> int:
    """The lifecycle state id of a managed node (lifecycle_msgs/srv/GetState on <node>/get_state)."""
    from lifecycle_msgs.srv import GetState

    probe = ros.nodes[0]
    client = probe.create_client(GetState, f'{node_name}/get_state')
    deadline = time.monotonic() + timeout
    try:
        ros.spin_until(client.service_is_ready, timeout, f'{node_name}/get_state')
        while True:
            # A request can be lost while discovery settles on a loaded machine; GetState is safe to ask again.
            future = client.call_async(GetState.Request())
            with contextlib.suppress(WaitTimeout):
                ros.spin_until(future.done, min(10.0, max(0.1, deadline - time.monotonic())), 'get_state answer')
            if future.done():
                return int(future.result().current_state.id)
            client.remove_pending_request(future)
            if time.monotonic() >= deadline:
                raise WaitTimeout(f'no answer from {node_name}/get_state within {timeout:.0f}s')
    finally:
        probe.destroy_client(client)


def fleetctl(config: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ['fleetctl', '--config', str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )
