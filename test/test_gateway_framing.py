"""The gateway's own split of incoming WebSocket frames and its shedding of best-effort publishes.

Pure: `next_client_frame` / `declared_size` against frames built here (hypothesis). Over a socket: a raw client
sends text, 16-bit-length, fragmented and ping frames cut at random places; every message is handled once, in order,
every ping answered. Invalid UTF-8 and oversize frames still close the connection with 1007 and 1009. Shedding:
over its ingest budget the gateway drops publishes to a best-effort topic (counted, the client warned), never those
to a reliable topic."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import re
import struct
import time
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_gateway_helpers import start_gateway
from websockets.asyncio.client import connect

from fleet_gateway.transport.framing import declared_size, next_client_frame

# --- pure ------------------------------------------------------------------------------------------------------


def client_frame(payload: bytes, *, first: int = 0x81, masked: bool = True, key: bytes = b'\x01\x02\x03\x04') -> bytes:
    """A client → server frame as RFC 6455 §5.2 lays it out (masked unless told otherwise)."""
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = bytes((first, mask_bit | size))
    elif size < 65536:
        header = struct.pack('!BBH', first, mask_bit | 126, size)
    else:
        header = struct.pack('!BBQ', first, mask_bit | 127, size)
    if not masked:
        return header + payload
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


frames = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 130), st.integers(65530, 65540)),
        st.booleans(),
        st.sampled_from([0x81, 0x82, 0x01, 0x80, 0x89, 0x88]),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(frames, st.floats(0, 1))
def test_frames_are_split_where_they_were_joined(specs, cut_fraction):
    built = [client_frame(b'x' * size, first=first, masked=masked) for size, masked, first in specs]
    data = b''.join(built)
    cut = int(len(data) * cut_fraction)
    visible = data[:cut]
    offset = 0
    for frame, (size, _masked, first) in zip(built, specs, strict=True):
        found = next_client_frame(visible, offset)
        if offset + len(frame) > cut:
            assert found is None  # incomplete: nothing is claimed
            if cut - offset >= 10:  # the whole length field is there
                assert declared_size(visible, offset) == size
            return
        assert found == (first, offset + len(frame) - size, offset + len(frame))
        assert declared_size(visible, offset) == size
        offset += len(frame)
    assert offset == cut


async def _spin_until(ros, predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f'timed out after {timeout:g} s waiting for {what}'
        for _ in range(200):  # one callback per spin_once
            ros.spin_once(0.0)
        await asyncio.sleep(0.002)


# --- over a socket -----------------------------------------------------------------------------------------------


async def raw_connect(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f'GET /?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n'
            f'Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n'
        ).encode()
    )
    response = await asyncio.wait_for(reader.readuntil(b'\r\n\r\n'), 5)
    assert response.startswith(b'HTTP/1.1 101'), response
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One server → client frame (unmasked): (opcode, payload)."""
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack('!H', await reader.readexactly(2))[0]
    elif size == 127:
        size = struct.unpack('!Q', await reader.readexactly(8))[0]
    return first & 0x0F, await reader.readexactly(size)


async def close_code(reader: asyncio.StreamReader) -> int:
    while True:
        opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
        if opcode == 0x8:
            return int(struct.unpack('!H', payload[:2])[0])


@pytest.mark.system
@pytest.mark.parametrize('seed', [1, 2, 3])
def test_frames_cut_anywhere_are_handled_once_in_order(processes, tmp_path, seed):
    gateway = start_gateway(processes, tmp_path)
    rng = random.Random(seed)

    async def scenario() -> None:
        reader, writer = await raw_connect(gateway.port, gateway.tokens['operator'])
        stream = bytearray()
        expected_ids: list[int] = []
        expected_pongs: set[bytes] = set()
        for i in range(300):
            kind = rng.choice(['small', 'small', 'medium', 'fragmented', 'ping'])
            key = os.urandom(4)
            text = json.dumps({'op': 'bogus', 'id': i, **({'pad': 'é' * 200} if kind == 'medium' else {})}).encode()
            if kind == 'ping':
                expected_pongs.add(b'p%d' % i)
                stream += client_frame(b'p%d' % i, first=0x89, key=key)
                continue
            expected_ids.append(i)
            if kind == 'fragmented':
                a, b = len(text) // 3, 2 * len(text) // 3
                stream += client_frame(text[:a], first=0x01, key=key)
                stream += client_frame(text[a:b], first=0x00, key=key)
                stream += client_frame(text[b:], first=0x80, key=key)
            else:
                stream += client_frame(text, key=key)
        offset = 0
        while offset < len(stream):  # cut at random places, with pauses so the gateway reads partial frames
            step = rng.randint(1, 700)
            writer.write(bytes(stream[offset : offset + step]))
            await writer.drain()
            offset += step
            if rng.random() < 0.3:
                await asyncio.sleep(0.002)
        ids: list[int] = []
        pongs: set[bytes] = set()
        deadline = time.monotonic() + 20
        while len(ids) < len(expected_ids) or pongs != expected_pongs:
            opcode, payload = await asyncio.wait_for(read_frame(reader), max(0.01, deadline - time.monotonic()))
            if opcode == 0xA:
                pongs.add(payload)
            elif opcode == 0x1:
                status = json.loads(payload)
                assert status['op'] == 'status' and status['level'] == 'error', status
                ids.append(status['id'])
        assert ids == expected_ids
        assert pongs == expected_pongs
        writer.close()

    asyncio.run(scenario())
    assert gateway.proc.alive()


@pytest.mark.system
def test_invalid_utf8_and_oversize_frames_still_close_the_connection(processes, tmp_path):
    gateway = start_gateway(processes, tmp_path, gateway={'limits': {'max_message_bytes': 100}})

    async def scenario() -> None:
        reader, writer = await raw_connect(gateway.port, gateway.tokens['operator'])
        writer.write(client_frame(json.dumps({'op': 'bogus', 'id': 'before'}).encode()))
        _opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
        assert json.loads(payload)['id'] == 'before'
        writer.write(client_frame(b'\xff\xfe'))
        assert await close_code(reader) == 1007
        writer.close()
        for size in (120, 5000, 70000):  # 7-, 16- and 64-bit length fields; the whole frame is never sent
            reader, writer = await raw_connect(gateway.port, gateway.tokens['operator'])
            writer.write(client_frame(b'{' * size)[:2000])
            assert await close_code(reader) == 1009
            writer.close()

    asyncio.run(scenario())
    assert gateway.proc.alive()


def _capacity_warnings(statuses: list[dict]) -> list[dict]:
    return [s for s in statuses if s.get('level') == 'warning' and 'over capacity' in s.get('msg', '')]


@pytest.mark.system
def test_over_budget_best_effort_publishes_are_shed_reliable_ones_never(processes, ros, tmp_path):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    gateway = start_gateway(
        processes,
        tmp_path,
        gateway={
            'ingest_budget_s': 0.0002,  # always over budget after a message or two: the shedding path is taken
            'ingest_shed_budget_s': 0.0002,
            'topic_qos': [{'glob': '/t/shed/telemetry', 'profile': 'telemetry'}],
            'metrics_port': 0,
        },
    )
    metrics_port = json.loads((tmp_path / 'gateway.ready').read_text())['metrics_port']
    node = ros.node('shed_sub')
    got: dict[str, list[str]] = {'telemetry': [], 'events': []}
    best_effort = QoSProfile(depth=5000, reliability=ReliabilityPolicy.BEST_EFFORT)
    subs = []
    for name in got:
        qos = best_effort if name == 'telemetry' else 5000
        subs.append(node.create_subscription(String, f'/t/shed/{name}', lambda m, n=name: got[n].append(m.data), qos))
    per_topic = 3000

    async def scenario() -> list[dict]:
        statuses: list[dict] = []
        async with connect(gateway.url(), max_queue=None) as ws:
            for name in got:
                await ws.send(json.dumps({'op': 'advertise', 'topic': f'/t/shed/{name}', 'type': 'std_msgs/String'}))
            deadline = time.monotonic() + 10
            while not all(node.count_publishers(f'/t/shed/{name}') for name in got):
                assert time.monotonic() < deadline, 'the gateway publishers did not appear'
                ros.spin_once(0.01)
            # our readers matched the gateway's writers; a probe on the reliable topic (never shed) proves the
            # writer matched the reader too
            await _spin_until(ros, lambda: all(sub.get_publisher_count() for sub in subs), 10, 'matched readers')
            deadline = time.monotonic() + 10
            while not got['events']:
                assert time.monotonic() < deadline, 'the probe never reached the reliable reader'
                await ws.send(json.dumps({'op': 'publish', 'topic': '/t/shed/events', 'msg': {'data': 'probe'}}))
                with contextlib.suppress(AssertionError):
                    await _spin_until(ros, lambda: got['events'], 0.2, 'the probe')
            got['events'].clear()
            for i in range(per_topic):
                for name in got:
                    await ws.send(json.dumps({'op': 'publish', 'topic': f'/t/shed/{name}', 'msg': {'data': str(i)}}))
                if i % 250 == 249:  # keep the gateway's reliable writer (KEEP_LAST 1000, `events`) within its history
                    await _spin_until(ros, lambda n=i: len(got['events']) > n - 500, 10, 'events to catch up')
            deadline = time.monotonic() + 20
            while len(got['events']) < per_topic and time.monotonic() < deadline:
                for _ in range(200):  # one callback per spin_once: take what arrived before waiting again
                    ros.spin_once(0.0)
                with contextlib.suppress(TimeoutError):
                    statuses.append(json.loads(await asyncio.wait_for(ws.recv(), 0.005)))
            # The gateway's warning waits in this client's queue; the loop above reads nothing when every event had
            # already arrived.
            deadline = time.monotonic() + 10
            while not _capacity_warnings(statuses) and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    statuses.append(json.loads(await asyncio.wait_for(ws.recv(), 0.1)))
        return statuses

    statuses = asyncio.run(scenario())
    for _ in range(200):
        ros.spin_once(0.005)
    assert got['events'] == [str(i) for i in range(per_topic)]  # reliable: every one, in order
    warnings = _capacity_warnings(statuses)
    assert warnings, statuses[:5]
    assert '/t/shed/telemetry' in warnings[0]['msg'] and '/t/shed/events' not in warnings[0]['msg']
    with urllib.request.urlopen(f'http://127.0.0.1:{metrics_port}/metrics', timeout=5) as response:
        exposition = response.read().decode()
    gateway.proc.stop()
    shed = int(re.search(r"'shed_total': (\d+)", gateway.proc.log_path.read_text()).group(1))
    assert f'fleet_gateway_shed_total{{gateway="fleet_gateway"}} {float(shed)}' in exposition, exposition
    assert 'fleet_gateway_clients{gateway="fleet_gateway"} 0.0' in exposition
    assert 0 < shed < per_topic
    assert len(got['telemetry']) <= per_topic - shed  # what was shed never reached ROS
    assert got['telemetry'] == sorted(got['telemetry'], key=int)  # and what did arrived in order
