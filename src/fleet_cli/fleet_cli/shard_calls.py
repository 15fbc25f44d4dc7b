"""Service calls fleetctl makes to shard leaders: state (GetShardState), fates (GetOutcomes) and an idempotent
submit that re-sends the same request_id until a leader answers."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fleet_cli.client import REPLY_TIMEOUT_SEC, ClientTimeout, FleetClient
from fleet_core import topics
from fleet_interfaces.srv import GetOutcomes, GetShardState, SubmitCommand

ShardKey = tuple[str, str]
RESEND_PAUSE_SEC = 0.5


def shard_states(client: FleetClient, keys: Sequence[ShardKey], timeout: float) -> dict[ShardKey, Any]:
    """Every shard leader's GetShardState answer. Raises ClientTimeout naming the shards whose leader did not
    answer within `timeout` (no leader, or not reachable): their state is unknown, so the caller must not guess."""
    clients = {key: client.node.create_client(GetShardState, topics.shard_state(*key)) for key in keys}
    try:
        deadline = time.monotonic() + timeout
        futures: dict[ShardKey, Any] = {}
        while len(futures) < len(clients):
            for key, srv in clients.items():
                if key not in futures and srv.service_is_ready():
                    futures[key] = srv.call_async(GetShardState.Request())
            if len(futures) == len(clients) or time.monotonic() >= deadline:
                break
            client.spin_once(0.02)
        while not all(f.done() for f in futures.values()) and time.monotonic() < deadline:
            client.spin_once(0.02)
        missing = [f'{s}/{h}' for (s, h) in keys if (s, h) not in futures or not futures[(s, h)].done()]
        if missing:
            raise ClientTimeout(f'no answer from the leader of {", ".join(missing)} within {timeout:.0f}s (no leader?)')
        return {key: future.result() for key, future in futures.items()}
    finally:
        for srv in clients.values():
            client.node.destroy_client(srv)


def submit_idempotent(
    client: FleetClient, key: ShardKey, request: SubmitCommand.Request, patience: float
) -> SubmitCommand.Response:
    """Send `request` (which carries a request_id) until a leader answers it, re-sending the same request after a
    timeout or a 'not the leader; retry' refusal: the leader answers a repeat with the first answer's commands, so a
    submission whose reply was lost is never queued twice. Raises ClientTimeout after `patience` seconds."""
    deadline = time.monotonic() + patience
    name = topics.shard_submit(*key)
    last = f'no leader of {key[0]}/{key[1]} answered'
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClientTimeout(f'{last} within {patience:.0f}s (request {request.request_id})')
        try:
            wait = min(REPLY_TIMEOUT_SEC, remaining)
            reply = client.call(SubmitCommand, name, request, timeout=wait, discovery=wait)
        except ClientTimeout as exc:
            last = str(exc)
        else:
            if reply.accepted or 'retry' not in reply.error or reply.error.endswith('retry later'):
                return reply
            last = reply.error
        client.spin(min(RESEND_PAUSE_SEC, max(0.0, deadline - time.monotonic())))


def outcomes_of(client: FleetClient, keys: Sequence[ShardKey], command_ids: Sequence[str], timeout: float) -> list[Any]:
    """GetOutcomes answers of every reachable shard leader in `keys` (shards without an answer are left out)."""
    clients = [client.node.create_client(GetOutcomes, topics.shard_outcomes_query(*key)) for key in keys]
    try:
        deadline = time.monotonic() + timeout
        futures: dict[int, Any] = {}
        while len(futures) < len(clients) and time.monotonic() < deadline:
            for index, srv in enumerate(clients):
                if index not in futures and srv.service_is_ready():
                    futures[index] = srv.call_async(GetOutcomes.Request(command_ids=list(command_ids)))
            client.spin_once(0.02)
        while not all(f.done() for f in futures.values()) and time.monotonic() < deadline:
            client.spin_once(0.02)
        return [f.result() for f in futures.values() if f.done()]
    finally:
        for srv in clients:
            client.node.destroy_client(srv)
