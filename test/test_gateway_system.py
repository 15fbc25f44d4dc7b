"""System tests of a fleet_gateway subprocess: tokens and roles, TLS, admission control, bad input over a real
socket, and a client that never reads (bounded, others unaffected)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path

import pytest
from test_gateway_helpers import make_cert, start_gateway
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.system


async def recv_json(ws, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, predicate, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        message = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        if predicate(message):
            return message


def test_tokens_roles_and_auth_op(processes, tmp_path):
    gateway = start_gateway(processes, tmp_path)
    base = f'ws://127.0.0.1:{gateway.port}/'

    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as refused:
            await connect(base + '?token=not-a-valid-token')
        assert refused.value.response.status_code == 401
        # no token: only the auth op is accepted
        async with connect(base) as ws:
            await ws.send(json.dumps({'op': 'subscribe', 'id': 'early', 'topic': '/t/a', 'type': 'std_msgs/String'}))
            status = await recv_json(ws)
            assert status['id'] == 'early' and 'not authenticated' in status['msg']
            await ws.send(json.dumps({'op': 'auth', 'id': 'a', 'token': gateway.tokens['viewer']}))
            await ws.send(json.dumps({'op': 'set_level', 'level': 'info'}))
            await ws.send(json.dumps({'op': 'auth', 'id': 'again', 'token': gateway.tokens['viewer']}))
            assert (await recv_json(ws)) == {
                'op': 'status',
                'level': 'info',
                'msg': 'already authenticated',
                'id': 'again',
            }
            await ws.send(
                json.dumps(
                    {'op': 'advertise', 'id': 'cmd', 'topic': '/site_a/r1/command', 'type': 'fleet_interfaces/Command'}
                )
            )
            denied = await recv_json(ws)
            assert denied['id'] == 'cmd' and 'may not publish' in denied['msg']
        # operator via Authorization header: command topics are still denied without a command_publish grant
        async with connect(base, additional_headers={'Authorization': f'Bearer {gateway.tokens["operator"]}'}) as ws:
            await ws.send(
                json.dumps(
                    {'op': 'advertise', 'id': 'c2', 'topic': '/site_a/r1/command', 'type': 'fleet_interfaces/Command'}
                )
            )
            assert (await recv_json(ws))['id'] == 'c2'
            await ws.send(
                json.dumps(
                    {'op': 'advertise', 'id': 'e', 'topic': '/fleet/site_a/z1/estop', 'type': 'fleet_interfaces/EStop'}
                )
            )
            await ws.send(json.dumps({'op': 'bogus', 'id': 'probe'}))
            assert (await recv_json(ws))['id'] == 'probe'  # the estop advertise produced no error

    asyncio.run(scenario())


def test_tls_with_throwaway_certificate(processes, ros, tmp_path):
    from std_msgs.msg import String

    cert, key = make_cert(tmp_path)
    gateway = start_gateway(processes, tmp_path, tls=(cert, key))
    node = ros.node('tls_pub')
    pub = node.create_publisher(String, '/t/tls', 10)
    context = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> dict:
        async with connect(gateway.url(), ssl=context) as ws:
            await ws.send(json.dumps({'op': 'subscribe', 'topic': '/t/tls', 'type': 'std_msgs/String'}))
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                pub.publish(String(data='over tls'))
                ros.spin_once(0.01)
                try:
                    return await recv_json(ws, 0.1)
                except TimeoutError:
                    continue
        raise AssertionError('no message over TLS')

    assert asyncio.run(scenario())['msg'] == {'data': 'over tls'}

    async def plain() -> None:
        async with connect(f'ws://127.0.0.1:{gateway.port}/', open_timeout=3):
            pass

    with pytest.raises((ConnectionClosed, InvalidStatus, OSError, TimeoutError, Exception)):
        asyncio.run(plain())


def test_admission_control_tells_excess_clients_to_retry_later(processes, tmp_path):
    gateway = start_gateway(processes, tmp_path, gateway={'admission': {'rate': 0.5, 'burst': 3}})

    async def scenario() -> list:
        results = []
        for _ in range(5):
            try:
                ws = await connect(gateway.url(), open_timeout=5)
                results.append(ws)
            except InvalidStatus as exc:
                results.append(exc.response)
        return results

    results = asyncio.run(scenario())
    admitted = [r for r in results if not hasattr(r, 'status_code')]
    refused = [r for r in results if hasattr(r, 'status_code')]
    assert len(admitted) == 3 and len(refused) == 2
    assert all(r.status_code == 503 and int(r.headers['Retry-After']) >= 1 for r in refused)
    assert b'retry in' in refused[0].body
    assert gateway.proc.alive()
    gateway.proc.stop()  # SIGINT: the gateway logs its stats() counters on the way out
    log = gateway.proc.log_path.read_text()
    assert "'rejected_admission': 2" in log and "'sessions_admitted': 3" in log, log


def test_bad_input_gets_status_errors_and_other_clients_are_unaffected(processes, ros, tmp_path):
    from std_msgs.msg import String

    gateway = start_gateway(
        processes, tmp_path, gateway={'limits': {'max_message_bytes': 20_000, 'fragment_timeout_s': 0.5}}
    )
    node = ros.node('bad_input_pub')
    pub = node.create_publisher(String, '/t/steady', 10)

    async def scenario() -> None:
        good = await connect(gateway.url())
        await good.send(json.dumps({'op': 'subscribe', 'topic': '/t/steady', 'type': 'std_msgs/String'}))
        bad = await connect(gateway.url())
        await bad.send('{"op": "subscribe", "id": ')
        assert 'malformed JSON' in (await recv_json(bad))['msg']
        cases = [
            ({'op': 'launch_missiles', 'id': 1}, 'unknown op'),
            ({'op': 'subscribe', 'id': 2, 'topic': 5}, 'must be a string'),
            ({'op': 'subscribe', 'id': 3, 'topic': '/t/x', 'type': 'nope_pkg/Nope'}, 'not installed'),
            ({'op': 'advertise', 'id': 4, 'topic': '/t/x', 'type': 'std_msgs/String'}, None),
            ({'op': 'publish', 'id': 5, 'topic': '/t/x', 'msg': {'data': [1]}}, 'expected a string'),
            (
                {'op': 'call_service', 'id': 6, 'service': '/t/none', 'type': 'std_srvs/Trigger', 'timeout': 0.2},
                'not available',
            ),
            ({'op': 'fragment', 'id': 7, 'data': '{"op":', 'num': 0, 'total': 2}, 'never completed'),
        ]
        for message, expected in cases:
            await bad.send(json.dumps(message))
            if expected is None:
                continue
            reply = await recv_json(bad, 10)
            assert reply['id'] == message['id'], reply
            text = reply['msg'] if reply['op'] == 'status' else reply['values']
            assert expected in text, reply
        await bad.send(b'\x00\xffgarbage')
        assert 'binary frames' in (await recv_json(bad))['msg']
        await bad.send('x' * 30_000)  # beyond max_message_bytes: websockets closes with 1009
        with pytest.raises(ConnectionClosed) as closed:
            await recv_json(bad)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        # the other client still gets its messages
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pub.publish(String(data='still here'))
            ros.spin_once(0.01)
            try:
                message = await recv_json(good, 0.1)
                assert message['msg']['data'] == 'still here'
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError('healthy client starved after abuse on another connection')
        await good.close()

    asyncio.run(scenario())
    assert gateway.proc.alive()


def test_client_that_never_reads_is_bounded_and_does_not_slow_others(processes, ros, tmp_path):
    from std_msgs.msg import String

    gateway = start_gateway(processes, tmp_path, gateway={'limits': {'send_queue_frames': 200}})
    node = ros.node('flood_pub')
    pub = node.create_publisher(String, '/t/flood', 1000)
    payload = 'y' * 2000

    async def scenario() -> int:
        stalled = await connect(gateway.url(), max_queue=1)  # stops reading once one frame is buffered
        await stalled.send(json.dumps({'op': 'set_level', 'level': 'warning'}))
        await stalled.send(json.dumps({'op': 'subscribe', 'topic': '/t/flood', 'type': 'std_msgs/String'}))
        reader = await connect(gateway.url())
        await reader.send(json.dumps({'op': 'subscribe', 'topic': '/t/flood', 'type': 'std_msgs/String'}))
        got = 0
        deadline = time.monotonic() + 30
        sent = 0
        while got < 2000 and time.monotonic() < deadline:
            if sent < 6000:
                for _ in range(20):
                    pub.publish(String(data=payload))
                    sent += 1
            ros.spin_once(0.0)
            try:
                while True:
                    await asyncio.wait_for(reader.recv(), 0.005)
                    got += 1
            except TimeoutError:
                pass
        rss_kb = int(
            next(
                line.split()[1]
                for line in Path(f'/proc/{gateway.proc.pid}/status').read_text().splitlines()
                if line.startswith('VmRSS:')
            )
        )
        await reader.close()
        await stalled.close()
        assert got >= 2000, f'the reading client got only {got} messages while another client stalled'
        return rss_kb

    rss_kb = asyncio.run(scenario())
    # 6,000 x 2 kB were published to a client that read nothing; its queue is capped at 200 frames (~0.4 MB)
    assert rss_kb < 250_000, rss_kb
    assert gateway.proc.alive()


def test_socket_fuzz_leaves_no_sessions_behind(processes, tmp_path):
    """2,000 generated inputs over 20 real connections; then every session is closed and nothing failed inside."""
    import random

    from test_gateway_fuzz import _input

    gateway = start_gateway(processes, tmp_path, gateway={'limits': {'max_message_bytes': 4_000}})

    async def one(seed: int) -> None:
        rng = random.Random(seed)
        async with connect(gateway.url(), max_queue=None) as ws:
            for _ in range(100):
                kind, item = _input(rng)
                if kind in ('text', 'bytes'):  # deliveries, answers and ticks are core-only inputs
                    await ws.send(item)
            await ws.send(json.dumps({'op': 'set_level', 'level': 'error'}))  # the fuzz may have chosen 'none'
            await ws.send(json.dumps({'op': 'bogus', 'id': 'last'}))
            await recv_until(ws, lambda m: m.get('id') == 'last', 20)

    async def scenario() -> None:
        await asyncio.gather(*(one(seed) for seed in range(20)))

    asyncio.run(scenario())
    assert gateway.proc.alive()
    gateway.proc.stop()
    log = gateway.proc.log_path.read_text()
    assert "'sessions_admitted': 20, 'sessions_closed': 20" in log, log
    assert "'internal_errors': 0" in log and "'clients': 0" in log, log
