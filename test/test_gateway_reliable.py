"""System tests of what a slow client gets on a reliable topic: every message, in order, or a close (1013) after an
unbroken prefix, never a silent gap. (The best-effort side, drops counted and reported, is in test_gateway_system.)

Both run the gateway with a telemetry queue of 50 frames: a reliable topic's frames must not be bounded by it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
from test_gateway_helpers import start_gateway
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness.wait import async_wait_for

pytestmark = pytest.mark.system

N = 2000
PAD = 'r' * 1000
"""2,000 messages of ~1 kB (2 MB): far more than the client's kernel buffers and the gateway's in-flight window."""


def _spinning(ros, condition):
    """`condition` for async_wait_for, with the test's executor spun once before each check."""

    def check():
        ros.spin_once(0.0)
        return condition()

    return check


def _publisher(ros, name: str):
    """A reliable publisher whose history (like the gateway's subscription, `ack` profile) holds every message of
    the test, so DDS itself loses none however late the gateway takes them."""
    from std_msgs.msg import String

    from fleet_ros import qos

    return ros.node(name).create_publisher(String, '/t/rel', qos.ACK)


async def _subscribe(ws, ros, pub) -> None:
    """Subscribe and wait until the gateway delivers (probe messages, told apart from the numbered ones)."""
    from std_msgs.msg import String

    await ws.send(json.dumps({'op': 'subscribe', 'topic': '/t/rel', 'type': 'std_msgs/String'}))

    async def probe() -> bool:
        pub.publish(String(data='probe'))
        try:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                if message.get('op') == 'publish':
                    return True
        except TimeoutError:
            return False

    deadline = time.monotonic() + 20
    while not await probe():
        ros.spin_once(0.0)
        assert time.monotonic() < deadline, 'the subscription never delivered'


AHEAD = 200
"""How far (messages, ~200 kB) publishing may run ahead of a reading client that paces it."""


async def _publish_all(ros, pub, delivered: Callable[[], int] | None = None) -> None:
    """Publish the N numbered messages, at most ~5,000 a second. With `delivered` (how many a reading client has
    received so far), stay at most AHEAD messages in front of that client: on a loaded machine this process may
    read more slowly than it publishes, and the client must not be closed for the test's own slowness."""
    from std_msgs.msg import String

    for i in range(N):
        pub.publish(String(data=f'{i} {PAD}'))
        if i % 50 == 49:
            ros.spin_once(0.0)
            await asyncio.sleep(0.01)
            if delivered is not None:
                await async_wait_for(
                    _spinning(ros, lambda at_least=i + 1 - AHEAD: delivered() >= at_least),
                    60,
                    interval=0.005,
                    what=f'the reading client to come within {AHEAD} of {i + 1} published',
                )


def _numbers(messages: list[dict]) -> list[int]:
    return [
        int(m['msg']['data'].split(' ', 1)[0])
        for m in messages
        if m.get('op') == 'publish' and m['msg']['data'] != 'probe'
    ]


def test_slow_client_gets_every_message_of_a_reliable_topic_in_order(processes, ros, tmp_path):
    gateway = start_gateway(
        processes,
        tmp_path,
        gateway={'topic_qos': [{'glob': '/t/rel', 'profile': 'ack'}], 'limits': {'send_queue_frames': 50}},
    )
    pub = _publisher(ros, 'rel_pub')

    async def scenario() -> list[dict]:
        async with connect(gateway.url(), max_queue=1, max_size=None) as ws:  # reads nothing while not asked to
            await _subscribe(ws, ros, pub)
            await _publish_all(ros, pub)  # meanwhile the client reads nothing: 2 MB pile up in the gateway
            got: list[dict] = []
            deadline = time.monotonic() + 60
            while len(_numbers(got)) < N and time.monotonic() < deadline:
                ros.spin_once(0.0)
                try:
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), 0.5)))
                except TimeoutError:
                    continue
            return got

    got = asyncio.run(scenario())
    numbers = _numbers(got)
    assert numbers == list(range(N)), (len(numbers), [n for a, n in zip(range(N), numbers, strict=False) if a != n][:5])
    assert not [m for m in got if m.get('op') == 'status'], [m for m in got if m.get('op') == 'status']


def test_client_that_cannot_take_a_reliable_topic_is_closed_after_an_unbroken_prefix(processes, ros, tmp_path):
    """With 600 kB queued for it at most (`send_queue_bytes`), a client that reads nothing is closed (1013); what it
    got before the close is an unbroken prefix; a client that reads (and paces the publisher, never more than ~200 kB
    behind) gets all, in order."""
    gateway = start_gateway(
        processes,
        tmp_path,
        gateway={
            'topic_qos': [{'glob': '/t/rel', 'profile': 'ack'}],
            'limits': {'send_queue_frames': 50, 'send_queue_bytes': 600_000},
        },
    )
    pub = _publisher(ros, 'rel_pub')

    async def scenario() -> tuple[list[dict], ConnectionClosed | None, list[dict]]:
        async with connect(gateway.url(), max_size=None) as reader:
            stalled = await connect(gateway.url(), max_queue=1, max_size=None)
            await _subscribe(stalled, ros, pub)
            await _subscribe(reader, ros, pub)
            read: list[dict] = []
            numbered = [0]

            async def read_all() -> None:
                while numbered[0] < N:
                    message = json.loads(await reader.recv())
                    read.append(message)
                    numbered[0] += len(_numbers([message]))

            reading = asyncio.ensure_future(read_all())
            await _publish_all(ros, pub, delivered=lambda: numbered[0] if not reading.done() else N)
            await async_wait_for(_spinning(ros, reading.done), 60, interval=0.005, what=f'all {N} at the reader')
            reading.result()
            got: list[dict] = []
            closed = None
            try:
                while True:
                    got.append(json.loads(await asyncio.wait_for(stalled.recv(), 20)))
            except ConnectionClosed as exc:
                closed = exc
            return got, closed, read

    got, closed, read = asyncio.run(scenario())
    assert _numbers(read) == list(range(N))
    assert closed is not None and closed.rcvd is not None, closed
    assert closed.rcvd.code == 1013 and 'never dropped' in closed.rcvd.reason, closed.rcvd
    numbers = _numbers(got)
    assert numbers == list(range(len(numbers))) and len(numbers) < N, numbers  # no gap: a prefix, then the close
    assert gateway.proc.alive()
