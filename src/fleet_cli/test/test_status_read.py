"""fleetctl status waits for each shard's leader on discovery and match, not for a fixed time: on a loaded host a
leader's status publisher can take seconds to be discovered, and a status read that gave up first showed a working
shard as unreachable."""

from __future__ import annotations

import time

from fleet_cli.client import DISCOVERY_WAIT_SEC, FleetClient
from fleet_cli.verbs.status import read_status
from fleet_core import topics
from fleet_interfaces.msg import ShardStatus
from fleet_ros import qos

SITE = 'site_st'
LATE_SEC = 4.0
"""The leader's status publisher appears this long after the read started: longer than the fixed 3 s the verb
used to wait, well within its discovery wait."""


class LateDiscovery(FleetClient):
    """A status reader whose shard `late` gets a leader (another participant) only LATE_SEC after the read began."""

    def __init__(self) -> None:
        super().__init__('fleetctl_test_status')
        self.began = time.monotonic()
        self.leader: FleetClient | None = None

    def spin_once(self, timeout_sec: float = 0.05) -> None:
        if self.leader is None and time.monotonic() - self.began >= LATE_SEC:
            self.leader = FleetClient('late_leader')
            pub = self.leader.node.create_publisher(ShardStatus, topics.shard_status(SITE, 'late'), qos.LATCHED)
            pub.publish(ShardStatus(site_id=SITE, shard_id='late', leader_id='late-leader', epoch=7))
        super().spin_once(timeout_sec)


def test_a_leader_discovered_late_is_shown_and_a_shard_without_one_is_unreachable() -> None:
    assert LATE_SEC + 2.0 < DISCOVERY_WAIT_SEC
    client = LateDiscovery()
    try:
        board = read_status(client, [(SITE, 'late'), (SITE, 'none')])
        waited = time.monotonic() - client.began
    finally:
        if client.leader is not None:
            client.leader.close()
        client.close()
    late, none = (board.row(key, now=time.time()) for key in board.keys)
    assert client.leader is not None, f'the read ended after {waited:.1f}s, before the late leader appeared'
    assert (late['reachable'], late.get('leader'), late.get('epoch')) == (True, 'late-leader', 7), late
    assert none == {'shard': f'{SITE}/none', 'reachable': False}
    assert not board.complete()
