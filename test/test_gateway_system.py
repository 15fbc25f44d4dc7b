"""System tests of a fleet_gateway subprocess: tokens and roles, TLS, admission control, bad input over a real
socket, and a client that never reads (bounded, others unaffected)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import ssl
import time
from pathlib import Path

import pytest
import test_gateway_helpers
from test_gateway_helpers import make_cert, start_gateway
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from harness.wait import wait_for

pytestmark = pytest.mark.system


@pytest.fixture(autouse=True, params=[1, 2], ids=['1worker', '2workers'])
def gateway_workers(request, monkeypatch) -> int:
    """Every gateway of these tests runs as one process and as a cluster of two (`--workers 2`); the cluster logs
    the sum of its workers' figures last ('cluster stopped: ...'), in the format of a single gateway's."""
    monkeypatch.setattr(test_gateway_helpers, 'WORKERS', request.param)
    return request.param


async def recv_json(ws, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def _receive_until_closed(ws) -> None:
    """Read (and drop) messages until the connection closes: raises its ConnectionClosed (or TimeoutError)."""
    while True:
        await recv_json(ws)


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
        # a relay (site link) may not forge what shards act on, even on a topic its ACL would cover
        async with connect(gateway.url('site-link')) as ws:
            for rid, topic, type_ in (
                ('ack', '/fleet/site_a/z1/ack', 'fleet_interfaces/CommandAck'),
                ('events', '/fleet/site_a/z1/task_events', 'fleet_interfaces/TaskEvent'),
            ):
                await ws.send(json.dumps({'op': 'advertise', 'id': rid, 'topic': topic, 'type': type_}))
            await ws.send(json.dumps({'op': 'bogus', 'id': 'probe'}))
            replies = [await recv_json(ws), await recv_json(ws)]
            assert replies[0]['id'] == 'ack' and 'may not publish' in replies[0]['msg'], replies
            assert replies[1]['id'] == 'probe', replies  # task_events (what it relays) was accepted

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

    # a plain-text client gets no HTTP response from the TLS listener (its request is not a TLS handshake)
    with pytest.raises(InvalidMessage, match='did not receive a valid HTTP response'):
        asyncio.run(plain())


def test_admission_control_tells_excess_clients_to_retry_later(processes, tmp_path):
    # a refill of one session per 1,000 s: however slow the handshakes, exactly the burst is admitted
    gateway = start_gateway(processes, tmp_path, gateway={'admission': {'rate': 0.001, 'burst': 3}})

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


def test_idle_unauthenticated_clients_cannot_lock_operators_out(processes, tmp_path):
    """Unauthenticated sessions have their own small pool (outside max_clients) and a deadline: filling it with idle
    connections leaves room for operators, and the idle ones are closed with 1008 when their deadline passes."""
    gateway = start_gateway(
        processes,
        tmp_path,
        gateway={'admission': {'max_clients': 2, 'max_unauthenticated': 3}, 'limits': {'auth_timeout_s': 1.5}},
    )
    base = f'ws://127.0.0.1:{gateway.port}/'

    async def scenario() -> None:
        idle = [await connect(base) for _ in range(3)]
        with pytest.raises(InvalidStatus) as refused:
            await connect(base)
        assert refused.value.response.status_code == 503 and b'waiting to authenticate' in refused.value.response.body
        operators = [await connect(gateway.url('operator')) for _ in range(2)]  # max_clients is theirs
        with pytest.raises(InvalidStatus) as full:
            await connect(gateway.url('operator'))
        assert full.value.response.status_code == 503
        for ws in idle:  # never authenticated: closed at the deadline
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 15)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert 'not authenticated within' in closed.value.rcvd.reason
        late = await connect(base)  # the pool has room again
        # two operators hold max_clients: authenticating joins that pool, so this one is refused
        await late.send(json.dumps({'op': 'auth', 'id': 'a', 'token': gateway.tokens['viewer']}))
        with pytest.raises(ConnectionClosed) as over:
            await asyncio.wait_for(late.recv(), 10)
        assert over.value.rcvd is not None and over.value.rcvd.code == 1013
        assert 'limit of 2 clients' in over.value.rcvd.reason
        for ws in operators:
            await ws.close()

    asyncio.run(scenario())
    gateway.proc.stop()
    log = gateway.proc.log_path.read_text()
    assert "'auth_timeouts': 3" in log and "'rejected_unauthenticated': 1" in log, log


def test_failed_authentications_are_rate_limited_per_address(processes, tmp_path):
    """300 wrong tokens from one address: after the burst, that address is refused (429, no token checked) and an
    auth op from it closes the connection; the limit then recovers at the configured rate."""
    gateway = start_gateway(
        processes, tmp_path, gateway={'admission': {'auth_failure_burst': 5, 'auth_failure_rate': 0.5}}
    )
    base = f'ws://127.0.0.1:{gateway.port}/'

    async def scenario() -> None:
        codes = []
        for i in range(300):
            try:
                ws = await connect(base + f'?token=wrong-token-{i:04d}-xxxxxxxx')
                await ws.close()
                codes.append(101)
            except InvalidStatus as exc:
                codes.append(exc.response.status_code)
                if exc.response.status_code == 429:
                    assert int(exc.response.headers['Retry-After']) >= 1  # noqa: PT017 - checked on every refusal of the loop
        assert codes[:5] == [401] * 5 and set(codes[5:]) <= {401, 429} and codes.count(429) >= 250, codes
        with pytest.raises(InvalidStatus) as throttled:  # even a good token waits while the address is throttled
            await connect(gateway.url('operator'))
        assert throttled.value.response.status_code == 429
        deadline = time.monotonic() + 3 * int(throttled.value.response.headers['Retry-After']) + 5
        while True:  # the address recovers one failure per 2 s: wait until a handshake is admitted again
            try:
                ws = await connect(base)
                break
            except InvalidStatus as exc:
                assert exc.response.status_code == 429 and time.monotonic() < deadline  # noqa: PT017 - every retry refused so
                await asyncio.sleep(0.1)
        async with ws:  # it may fail once more; then even a good token in an auth op is refused unchecked, closed
            await ws.send(json.dumps({'op': 'auth', 'id': 'x', 'token': 'another-wrong-token-xxxx'}))
            assert 'authentication failed' in (await recv_json(ws))['msg']
            await ws.send(json.dumps({'op': 'auth', 'id': 'y', 'token': gateway.tokens['operator']}))
            refused = await recv_json(ws)
            assert refused['id'] == 'y' and 'too many failed' in refused['msg'], refused
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    asyncio.run(scenario())


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
    """On a best-effort (telemetry) topic, what a client does not read is dropped, counted and reported to it.
    (On a reliable topic it would be closed instead: test_gateway_reliable.)"""
    from std_msgs.msg import String

    from fleet_ros import qos

    telemetry = [{'glob': '/t/flood', 'profile': 'telemetry'}]
    gateway = start_gateway(processes, tmp_path, gateway={'limits': {'send_queue_frames': 200}, 'topic_qos': telemetry})
    node = ros.node('flood_pub')
    pub = node.create_publisher(String, '/t/flood', qos.TELEMETRY)
    payload = 'y' * 2000

    async def scenario() -> int:
        stalled = await connect(gateway.url(), max_queue=1)  # stops reading once one frame is buffered
        await stalled.send(json.dumps({'op': 'set_level', 'level': 'warning'}))
        await stalled.send(json.dumps({'op': 'subscribe', 'topic': '/t/flood', 'type': 'std_msgs/String'}))
        reader = await connect(gateway.url())
        await reader.send(json.dumps({'op': 'subscribe', 'topic': '/t/flood', 'type': 'std_msgs/String'}))
        # a cluster's workers each subscribe for their own clients: flood once every one of them is matched
        workers = len({ws.response.headers['Server'] for ws in (stalled, reader)})
        await _spin_until(ros, lambda: pub.get_subscription_count() >= workers, 20, 'the gateway subscriptions')
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
                for line in Path(f'/proc/{gateway.proc.pid}/status').read_text().splitlines()  # noqa: ASYNC240 - /proc is not disk I/O
                if line.startswith('VmRSS:')
            )
        )
        await reader.close()
        assert got >= 2000, f'the reading client got only {got} messages while another client stalled'
        # the stalled client now reads what reached it, until it is quiet: among it, the gateway's reports of what
        # it dropped (one a second at most; the last one after the flood ended)
        reported = 0
        with contextlib.suppress(TimeoutError):
            while True:
                message = await recv_json(stalled, 3.0)
                if message.get('op') == 'status' and 'not keeping up' in message.get('msg', ''):
                    reported = int(re.search(r'\((\d+) in total', message['msg']).group(1))
        await stalled.close()
        return rss_kb, reported

    rss_kb, reported = asyncio.run(scenario())
    # 6,000 x 2 kB were published to a client that read nothing; its queue is capped at 200 frames (~0.4 MB) and
    # at most a window (8 KiB until it answers a ping) is in flight to it: nearly all the rest is dropped and counted
    assert rss_kb < 250_000, rss_kb
    assert gateway.proc.alive()
    gateway.proc.stop()
    dropped = int(re.findall(r"'dropped_total': (\d+)", gateway.proc.log_path.read_text())[-1])  # a cluster's sum
    assert reported >= 1000 and dropped >= reported, (reported, dropped)


def test_socket_fuzz_leaves_no_sessions_behind(processes, tmp_path):
    """2,000 generated inputs over 20 real connections; then every session is closed and nothing failed inside."""
    import random

    from harness.gateway_inputs import random_input as _input

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


async def _spin_until(ros, predicate, timeout: float, what: str):
    """Spin the test's ROS executor while the asyncio side (WebSocket clients) keeps running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ros.spin_once(0.0)
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.005)
    raise AssertionError(f'timed out after {timeout:g} s waiting for {what}')


async def _until_reachable(ros, ws, service: str, srv_type: str, args: dict | None = None, timeout: float = 30.0):
    """Call `service` (served by this process's ROS node) through `ws` until a call is answered: `ws`'s gateway (a
    cluster's worker started moments ago) has discovered the server in its ROS graph by then."""
    deadline = time.monotonic() + timeout
    for attempt in itertools.count():
        rid = f'reach-{attempt}'
        call = {'op': 'call_service', 'id': rid, 'service': service, 'type': srv_type, 'args': args or {}}
        await ws.send(json.dumps(call))
        reply = asyncio.ensure_future(recv_until(ws, lambda m, r=rid: m.get('id') == r, timeout))
        while not reply.done():  # this process answers the call: spin while waiting
            ros.spin_once(0.0)
            await asyncio.sleep(0.005)
        if reply.result().get('result') is True:
            return
        assert time.monotonic() < deadline, f'{service} not reachable through the gateway: {reply.result()}'
        await asyncio.sleep(0.2)


class _Inbox:
    """Reads one WebSocket connection in the background; `next(pred)` returns the first matching message."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.messages: list[dict] = []
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.messages.append(json.loads(raw))
        except ConnectionClosed:
            pass

    def take(self, predicate) -> dict | None:
        for i, message in enumerate(self.messages):
            if predicate(message):
                return self.messages.pop(i)
        return None


def test_client_served_service_answers_rclpy_callers_with_timeouts_conflicts_and_disconnect(processes, ros, tmp_path):
    """A WebSocket client serves std_srvs/SetBool through the gateway; an rclpy client in this process calls it."""
    from std_srvs.srv import SetBool, Trigger

    from fleet_ros.qos import SERVICE_CALLS

    gateway = start_gateway(processes, tmp_path, gateway={'limits': {'served_call_timeout_s': 1.0}})
    node = ros.node('served_caller')
    client = node.create_client(SetBool, '/served/flag', qos_profile=SERVICE_CALLS)
    node.create_service(Trigger, '/served/taken', lambda _req, resp: resp)  # served by a ROS node already

    async def scenario() -> None:
        server_ws = await connect(gateway.url())
        inbox = _Inbox(server_ws)
        await server_ws.send(json.dumps({'op': 'set_level', 'level': 'info'}))
        await server_ws.send(
            json.dumps({'op': 'advertise_service', 'id': 'adv', 'service': '/served/flag', 'type': 'std_srvs/SetBool'})
        )
        await _spin_until(ros, client.service_is_ready, 10, 'the served service in the ROS graph')

        # 1. answered calls: each ROS call arrives as a call_service with a fresh id; the reply reaches the caller
        futures = [client.call_async(SetBool.Request(data=i % 2 == 0)) for i in range(20)]
        calls = []
        while len(calls) < 20:
            call = await _spin_until(ros, lambda: inbox.take(lambda m: m['op'] == 'call_service'), 10, 'call_service')
            assert call['service'] == '/served/flag' and set(call['args']) == {'data'}
            calls.append(call)
        assert len({c['id'] for c in calls}) == 20
        for call in reversed(calls):  # out of order on purpose
            values = {'success': call['args']['data'], 'message': f'echo {call["args"]["data"]}'}
            await server_ws.send(
                json.dumps(
                    {
                        'op': 'service_response',
                        'id': call['id'],
                        'service': '/served/flag',
                        'values': values,
                        'result': True,
                    }
                )
            )
        await _spin_until(ros, lambda: all(f.done() for f in futures), 10, 'responses')
        for i, future in enumerate(futures):
            assert future.result().success == (i % 2 == 0) and future.result().message == f'echo {i % 2 == 0}'

        # 2. an answer that never comes: the caller gets a failed response after served_call_timeout_s (1 s)
        late = client.call_async(SetBool.Request(data=True))
        call = await _spin_until(ros, lambda: inbox.take(lambda m: m['op'] == 'call_service'), 10, 'call_service')
        await _spin_until(ros, late.done, 10, 'the timed-out response')
        assert late.result().success is False and 'no response within 1 s' in late.result().message  # the timeout
        await server_ws.send(json.dumps({'op': 'service_response', 'id': call['id'], 'values': {}, 'result': True}))
        stale = await _spin_until(ros, lambda: inbox.take(lambda m: m.get('level') == 'error'), 5, 'status error')
        assert stale['id'] == call['id'] and 'no call with id' in stale['msg']

        # 3. wrong types in values: the client gets a status error, the caller a failed response at once
        bad = client.call_async(SetBool.Request(data=True))
        call = await _spin_until(ros, lambda: inbox.take(lambda m: m['op'] == 'call_service'), 10, 'call_service')
        await server_ws.send(
            json.dumps({'op': 'service_response', 'id': call['id'], 'values': {'success': 'yes'}, 'result': True})
        )
        await _spin_until(ros, bad.done, 5, 'the failed response')
        assert bad.result().success is False
        assert (
            'success'
            in (await _spin_until(ros, lambda: inbox.take(lambda m: m.get('level') == 'error'), 5, 'err'))['msg']
        )

        # 4. a second client may not take the name; nor may anyone take a name a ROS node serves
        other = await connect(gateway.url())
        await other.send(
            json.dumps({'op': 'advertise_service', 'id': 'dup', 'service': '/served/flag', 'type': 'std_srvs/SetBool'})
        )
        refused = await recv_until(other, lambda m: m.get('id') == 'dup')
        assert refused['level'] == 'error' and 'already served through the gateway' in refused['msg']
        # (the gateway knows of a ROS node's service from its ROS graph: `other`'s worker must have discovered it)
        await _until_reachable(ros, other, '/served/taken', 'std_srvs/Trigger')
        await other.send(
            json.dumps({'op': 'advertise_service', 'id': 'ros', 'service': '/served/taken', 'type': 'std_srvs/Trigger'})
        )
        refused = await recv_until(other, lambda m: m.get('id') == 'ros')
        assert 'already served by a ROS node' in refused['msg']

        # 5. the serving client disconnects with calls pending: the callers get failed responses promptly
        pending = [client.call_async(SetBool.Request(data=True)) for _ in range(3)]
        for _ in range(3):
            await _spin_until(ros, lambda: inbox.take(lambda m: m['op'] == 'call_service'), 10, 'call_service')
        await server_ws.close()
        await _spin_until(ros, lambda: all(f.done() for f in pending), 5, 'failed responses after the disconnect')
        # failed because of the disconnect (the 1 s timeout would say 'no response within 1 s')
        assert all(f.result().success is False and 'disconnected' in f.result().message for f in pending)
        await _spin_until(ros, lambda: not client.service_is_ready(), 10, 'the service to leave the graph')

        # 6. now the second client may serve the name; unadvertise_service removes it again
        await other.send(
            json.dumps({'op': 'advertise_service', 'id': 'take', 'service': '/served/flag', 'type': 'std_srvs/SetBool'})
        )
        await _spin_until(ros, client.service_is_ready, 10, 'the re-advertised service')
        future = client.call_async(SetBool.Request(data=False))
        call = await recv_until(other, lambda m: m['op'] == 'call_service')
        await other.send(
            json.dumps({'op': 'service_response', 'id': call['id'], 'values': {'success': True, 'message': 'b'}})
        )
        await _spin_until(ros, future.done, 5, 'the response from the second client')
        assert future.result().message == 'b'
        await other.send(json.dumps({'op': 'unadvertise_service', 'id': 'un', 'service': '/served/flag'}))
        await _spin_until(ros, lambda: not client.service_is_ready(), 10, 'the unadvertised service to leave')
        await other.close()

    asyncio.run(scenario())
    assert gateway.proc.alive()
    gateway.proc.stop()
    log = gateway.proc.log_path.read_text()
    assert "'internal_errors': 0" in log and "'clients': 0" in log, log


def test_incoming_path_fragments_order_utf8_and_early_messages(processes, ros, tmp_path):
    """The gateway's own receive path: fragmented messages, a burst right after the handshake kept in order, a
    publish that reaches an rclpy subscriber, and a text frame that is not UTF-8 (closed with 1007)."""
    from std_msgs.msg import String

    gateway = start_gateway(processes, tmp_path, gateway={'ingest_budget_s': 0.001, 'receive_buffer_bytes': 8192})
    node = ros.node('ingest_path_sub')
    got: list[str] = []
    node.create_subscription(String, '/t/ingest', lambda m: got.append(m.data), 5000)

    async def scenario() -> None:
        ws = await connect(gateway.url(), max_queue=None)
        # a burst sent before the session necessarily started: every message answered, in order
        for i in range(300):
            await ws.send(json.dumps({'op': 'bogus', 'id': i}))
        ids = [(await recv_json(ws))['id'] for _ in range(300)]
        assert ids == list(range(300))
        # a fragmented text message (three frames) is reassembled
        advertise = json.dumps({'op': 'advertise', 'id': 'adv', 'topic': '/t/ingest', 'type': 'std_msgs/String'})
        await ws.send([advertise[:10], advertise[10:30], advertise[30:]])
        await ws.send(json.dumps({'op': 'bogus', 'id': 'after-fragments'}))
        assert (await recv_json(ws))['id'] == 'after-fragments'  # the advertise itself produced no error
        await _spin_until(ros, lambda: node.count_publishers('/t/ingest') > 0, 10, 'the gateway publisher')

        async def warm() -> bool:  # until the gateway's publisher has matched this subscriber too
            await ws.send(json.dumps({'op': 'publish', 'topic': '/t/ingest', 'msg': {'data': 'warm'}}))
            for _ in range(20):
                ros.spin_once(0.005)
            return bool(got)

        deadline = time.monotonic() + 10
        while not await warm():
            assert time.monotonic() < deadline, 'no warm-up message arrived'
        await asyncio.sleep(0.1)
        for _ in range(50):
            ros.spin_once(0.0)
        got.clear()
        for chunk in range(4):  # each chunk needs several 1 ms ingest budgets: reading pauses, nothing is lost
            for i in range(chunk * 500, chunk * 500 + 500):
                await ws.send(json.dumps({'op': 'publish', 'topic': '/t/ingest', 'msg': {'data': f'm{i}'}}))

            def arrived(n: int = chunk * 500 + 500) -> bool:
                for _ in range(100):
                    ros.spin_once(0.0)
                return len([m for m in got if m != 'warm']) >= n

            await _spin_until(ros, arrived, 20, 'every publish at the subscriber')
        assert [m for m in got if m != 'warm'] == [f'm{i}' for i in range(2000)]
        # invalid UTF-8 in a text frame: closed with 1007, like websockets itself would
        ws.protocol.send_text(b'{"op": "\xff\xfe"}')
        ws.send_data()
        with pytest.raises(ConnectionClosed) as closed:
            await _receive_until_closed(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007

    asyncio.run(scenario())
    assert gateway.proc.alive()


def test_action_goals_feedback_result_cancel_failures_limits_and_disconnect(processes, tmp_path):
    """Goals to a RunMission server in another process, sent through the gateway by a raw WebSocket client."""
    from test_gateway_helpers import start_mission_server

    server = start_mission_server(processes, '/act/mission')
    gateway = start_gateway(
        processes, tmp_path, gateway={'limits': {'action_server_wait_s': 3.0, 'max_action_goals': 3}}
    )

    def goal(rid: str, workflow: str, points: int, *, action: str = '/act/mission', feedback: bool = True) -> str:
        args = {'mission_id': rid, 'workflow': workflow, 'point_ids': [f'p{i}' for i in range(points)]}
        message = {
            'op': 'send_action_goal',
            'id': rid,
            'action': action,
            'action_type': 'fleet_interfaces/action/RunMission',
            'args': args,
            'feedback': feedback,
        }
        return json.dumps(message)

    async def scenario() -> None:
        ws = await connect(gateway.url(), max_queue=None)
        # 0. the first goal also waits for the gateway's new action client to discover the server (another
        # process), which on a loaded machine can take longer than action_server_wait_s: warm up until one succeeds
        deadline = time.monotonic() + 30
        for attempt in itertools.count():  # each failed warm-up counts as one more 'unavailable' goal
            warm_ups[0] = attempt + 1
            await ws.send(goal(f'w{attempt}', 'quick', 1, feedback=False))
            warm = await recv_until(ws, lambda m, n=attempt: m.get('id') == f'w{n}' and m['op'] == 'action_result', 20)
            if warm['result'] is True:
                break
            assert time.monotonic() < deadline, f'the action server was never reached: {warm}'
        # 1. goal -> feedback -> result
        await ws.send(goal('g1', 'quick', 10))
        feedback = []
        while True:
            message = await recv_until(ws, lambda m: m.get('id') == 'g1', 20)
            if message['op'] == 'action_result':
                break
            assert message['op'] == 'action_feedback' and message['action'] == '/act/mission', message
            feedback.append(message['values'])
        assert message['status'] == 4 and message['result'] is True, message
        assert message['values']['success'] is True and message['values']['points_done'] == 10
        assert message['values']['detail'] == 'g1 done'
        assert feedback and all(f['points_total'] == 10 and f['state'] == 'RUNNING' for f in feedback)
        done = [f['points_done'] for f in feedback]
        assert done == sorted(done) and done[-1] == 10, done  # in order, and none after the result

        # 2. rejected by the server: a status error and a result with result false, both with the goal id
        await ws.send(goal('r1', 'reject', 3))
        error = await recv_until(ws, lambda m: m.get('id') == 'r1', 10)
        assert error['op'] == 'status' and error['level'] == 'error' and 'rejected' in error['msg'], error
        result = await recv_until(ws, lambda m: m.get('id') == 'r1', 10)
        assert result['op'] == 'action_result' and result['result'] is False and result['status'] == 0
        assert 'rejected' in result['values']

        # 3. no action server within action_server_wait_s (3 s)
        started = time.monotonic()
        await ws.send(goal('u1', 'quick', 1, action='/act/nobody'))
        error = await recv_until(ws, lambda m: m.get('id') == 'u1', 10)
        assert 'not available' in error['msg'] and 2.9 <= time.monotonic() - started < 10, error
        result = await recv_until(ws, lambda m: m.get('id') == 'u1', 10)
        assert result['op'] == 'action_result' and result['result'] is False
        # cancelled while still waiting for a server: it ends at once as CANCELED, never sent
        await ws.send(goal('u2', 'quick', 1, action='/act/nobody'))
        await ws.send(json.dumps({'op': 'cancel_action_goal', 'id': 'u2', 'action': '/act/nobody'}))
        result = await recv_until(ws, lambda m: m.get('id') == 'u2', 10)
        # CANCELED with result true: ended by the cancel (waiting out the 3 s would end it 'not available', status 0)
        assert result['op'] == 'action_result' and result['status'] == 5 and result['result'] is True, result

        # 4. cancel a running goal: the server stops it, the result has status CANCELED
        await ws.send(goal('c1', 'slow', 20))
        first = await recv_until(ws, lambda m: m.get('id') == 'c1', 10)
        assert first['op'] == 'action_feedback', first
        await ws.send(json.dumps({'op': 'cancel_action_goal', 'id': 'c1', 'action': '/act/mission'}))
        result = await recv_until(ws, lambda m: m.get('id') == 'c1' and m['op'] == 'action_result', 10)
        assert result['status'] == 5 and result['result'] is True, result
        assert result['values']['detail'] == 'cancelled by the client' and result['values']['points_done'] < 20
        await ws.send(json.dumps({'op': 'cancel_action_goal', 'id': 'c1', 'action': '/act/mission'}))
        unknown = await recv_until(ws, lambda m: m.get('id') == 'c1', 10)
        assert unknown['level'] == 'error' and 'no goal with id' in unknown['msg'], unknown

        # 5. at most max_action_goals (3) in flight; a disconnect cancels them in the server
        for rid in ('s1', 's2', 's3'):
            await ws.send(goal(rid, 'slow', 20, feedback=False))
        await ws.send(goal('s4', 'slow', 20))
        refused = await recv_until(ws, lambda m: m.get('id') == 's4', 10)
        assert 'at most 3 action goals' in refused['msg'], refused
        await asyncio.sleep(0)
        await _wait_for_text(server, 'CANCELED c1', 10)
        await ws.close()
        for rid in ('s1', 's2', 's3'):
            await _wait_for_text(server, f'CANCELED {rid}', 10)

        # 6. a role without a send_action_goal grant is refused, with the id
        async with connect(gateway.url('viewer')) as viewer:
            await viewer.send(goal('v1', 'quick', 1))
            denied = await recv_until(viewer, lambda m: m.get('id') == 'v1', 10)
            assert 'may not send action goal /act/mission' in denied['msg'], denied

    warm_ups = [0]
    asyncio.run(scenario())
    assert gateway.proc.alive() and server.alive()
    gateway.proc.stop()
    log = gateway.proc.log_path.read_text()
    assert "'internal_errors': 0" in log and "'clients': 0" in log, log
    # unavailable: /act/nobody once, plus each warm-up goal that did not reach the server
    assert "'rejected': 1" in log and f"'unavailable': {warm_ups[0]}," in log, log


def test_client_served_action_runs_rclpy_goals_with_feedback_cancel_timeout_conflicts_and_disconnect(
    processes, ros, tmp_path
):
    """A WebSocket client serves fleet_interfaces/RunMission through the gateway; an rclpy ActionClient in this
    process sends goals to it."""
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient, ActionServer
    from std_srvs.srv import Trigger

    from fleet_interfaces.action import RunMission

    gateway = start_gateway(processes, tmp_path, gateway={'limits': {'served_goal_timeout_s': 1.0}})
    node = ros.node('served_action_caller')
    client = ActionClient(node, RunMission, '/served/mission')
    taken = ActionServer(node, RunMission, '/served/taken', lambda handle: RunMission.Result())  # a ROS node's
    node.create_service(Trigger, '/served/taken_after', lambda _req, resp: resp)

    def result_of(handle):
        return handle.get_result_async()

    async def send_goal(inbox, workflow: str, feedback: list | None = None):
        """Send a ROS goal; returns its accepted handle and the send_action_goal the serving client got."""
        sent = client.send_goal_async(
            RunMission.Goal(workflow=workflow, point_ids=['p1', 'p2']),
            feedback_callback=(lambda m: feedback.append(m.feedback)) if feedback is not None else None,
        )
        await _spin_until(ros, sent.done, 10, 'the goal to be accepted')
        assert sent.result().accepted
        forwarded = await _spin_until(
            ros,
            lambda: inbox.take(lambda m: m['op'] == 'send_action_goal' and m['args']['workflow'] == workflow),
            10,
            f'send_action_goal {workflow}',
        )
        return sent.result(), forwarded

    async def answer(ws, goal: dict, **fields) -> None:
        await ws.send(json.dumps({'op': 'action_result', 'id': goal['id'], 'action': goal['action'], **fields}))

    async def scenario() -> None:
        server_ws = await connect(gateway.url())
        inbox = _Inbox(server_ws)
        await server_ws.send(json.dumps({'op': 'set_level', 'level': 'info'}))
        await server_ws.send(
            json.dumps({'op': 'advertise_action', 'id': 'adv', 'action': '/served/mission', 'type': RUN_MISSION})
        )
        await _spin_until(ros, client.server_is_ready, 10, 'the served action in the ROS graph')

        # 1. goal -> feedback -> result: the goal arrives as send_action_goal with a fresh id and feedback true
        feedback: list = []
        handle, goal = await send_goal(inbox, 'inspection', feedback)
        assert goal['action'] == '/served/mission' and goal['action_type'] == RUN_MISSION and goal['feedback'] is True
        assert goal['args']['point_ids'] == ['p1', 'p2']
        deadline = time.monotonic() + 10  # the feedback subscription may match the gateway's publisher a bit later
        while not feedback:
            assert time.monotonic() < deadline, 'no feedback reached the ROS client'
            message = {'op': 'action_feedback', 'id': goal['id'], 'action': '/served/mission'}
            await server_ws.send(json.dumps({**message, 'values': {'points_done': 1, 'state': 'RUNNING'}}))
            with contextlib.suppress(AssertionError):
                await _spin_until(ros, lambda: feedback, 0.2, 'feedback')
        assert feedback[0].points_done == 1 and feedback[0].state == 'RUNNING'
        result = result_of(handle)
        await answer(server_ws, goal, values={'success': True, 'points_done': 2, 'detail': 'ok'}, status=4, result=True)
        await _spin_until(ros, result.done, 10, 'the result')
        assert result.result().status == GoalStatus.STATUS_SUCCEEDED
        assert result.result().result.success is True and result.result().result.detail == 'ok'
        await answer(server_ws, goal, values={}, status=4)  # finished: its id is unknown now
        stale = await _spin_until(ros, lambda: inbox.take(lambda m: m.get('level') == 'error'), 5, 'status error')
        assert stale['id'] == goal['id'] and 'no goal with id' in stale['msg']

        # 2. a ROS cancel reaches the client as cancel_action_goal; it ends the goal as CANCELED
        handle, goal = await send_goal(inbox, 'to-cancel')
        cancel = handle.cancel_goal_async()
        asked = await _spin_until(
            ros, lambda: inbox.take(lambda m: m['op'] == 'cancel_action_goal'), 10, 'cancel_action_goal'
        )
        assert asked == {'op': 'cancel_action_goal', 'id': goal['id'], 'action': '/served/mission'}
        await _spin_until(ros, cancel.done, 10, 'the cancel response')
        result = result_of(handle)
        await answer(server_ws, goal, values={'detail': 'stopped'}, status=5, result=True)
        await _spin_until(ros, result.done, 10, 'the cancelled result')
        assert result.result().status == GoalStatus.STATUS_CANCELED and result.result().result.detail == 'stopped'

        # 3. roslibjs' setFailed (result false, status ABORTED, no values): the goal is aborted
        handle, goal = await send_goal(inbox, 'to-fail')
        result = result_of(handle)
        await answer(server_ws, goal, status=6, result=False)
        await _spin_until(ros, result.done, 10, 'the failed result')
        assert result.result().status == GoalStatus.STATUS_ABORTED

        # 4. no action_result within served_goal_timeout_s (1 s): aborted, and the client is told with the goal id
        handle, goal = await send_goal(inbox, 'ignored')
        result = result_of(handle)
        await _spin_until(ros, result.done, 10, 'the timed-out result')
        assert result.result().status == GoalStatus.STATUS_ABORTED  # the warning below says it was the timeout
        warning = await _spin_until(ros, lambda: inbox.take(lambda m: m.get('id') == goal['id']), 5, 'the warning')
        assert warning['level'] == 'warning' and 'no action_result within 1 s' in warning['msg']

        # 5. a second client may not take the name; nor may anyone take a name a ROS node serves
        other = await connect(gateway.url())
        # (the gateway knows of a ROS node's action from its ROS graph: `other`'s worker must have discovered it)
        # (the action's services have hidden names: a service this node created after them stands in; this
        # process's endpoints are announced in the order they were created)
        await _until_reachable(ros, other, '/served/taken_after', 'std_srvs/Trigger')
        for rid, action in (('dup', '/served/mission'), ('ros', '/served/taken')):
            await other.send(json.dumps({'op': 'advertise_action', 'id': rid, 'action': action, 'type': RUN_MISSION}))
        refused = await recv_until(other, lambda m: m.get('id') == 'dup')
        assert refused['level'] == 'error' and 'already served through the gateway' in refused['msg']
        refused = await recv_until(other, lambda m: m.get('id') == 'ros')
        assert refused['level'] == 'error' and 'already served by a ROS node' in refused['msg']

        # 6. the serving client disconnects with goals in flight: they are aborted at once, the server goes
        results = [result_of((await send_goal(inbox, f'pending-{i}'))[0]) for i in range(3)]
        await server_ws.close()
        await _spin_until(ros, lambda: all(r.done() for r in results), 5, 'aborted results after the disconnect')
        assert all(r.result().status == GoalStatus.STATUS_ABORTED for r in results)
        await _spin_until(ros, lambda: not client.server_is_ready(), 10, 'the action server to leave the graph')

        # 7. now the second client may serve it; unadvertise_action aborts its goal and removes it again
        other_inbox = _Inbox(other)
        await other.send(
            json.dumps({'op': 'advertise_action', 'id': 'take', 'action': '/served/mission', 'type': RUN_MISSION})
        )
        # (its worker may still see the first server in its graph: the cluster's claims decide between the workers'
        # clients, so that server does not count as one a ROS node serves)
        served = await _spin_until(
            ros,
            lambda: client.server_is_ready() or other_inbox.take(lambda m: m.get('id') == 'take'),
            10,
            'the re-advertised action',
        )
        assert served is True, f'the second client could not serve it: {served}'
        handle, goal = await send_goal(other_inbox, 'second')
        result = result_of(handle)
        await other.send(json.dumps({'op': 'unadvertise_action', 'id': 'un', 'action': '/served/mission'}))
        await _spin_until(ros, result.done, 5, 'the result aborted by unadvertise_action')
        assert result.result().status == GoalStatus.STATUS_ABORTED
        await _spin_until(ros, lambda: not client.server_is_ready(), 10, 'the unadvertised action to leave')
        await other.close()

    asyncio.run(scenario())
    taken.destroy()
    assert gateway.proc.alive()
    gateway.proc.stop()
    log = gateway.proc.log_path.read_text()
    assert "'internal_errors': 0" in log and "'clients': 0" in log, log
    assert "'served_goals': {'forwarded': 8, 'succeeded': 1, 'canceled': 1, 'aborted': 6" in log, log


RUN_MISSION = 'fleet_interfaces/action/RunMission'


async def _wait_for_text(proc, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.output():
        assert time.monotonic() < deadline, f'{text!r} not in the output of {proc.name}:\n{proc.output()}'
        await asyncio.sleep(0.02)


def test_latched_replay_latch_advertise_and_qos_that_follows_the_publishers(processes, ros, tmp_path):
    """As rosbridge: a late subscriber to a latched topic gets the last sample at once, `advertise` with `latch`
    makes a transient-local publisher, a topic without a topic_qos rule is subscribed with the publishers'
    reliability, and a configured profile that cannot match them is reported to the client."""
    from std_msgs.msg import String

    from fleet_ros import qos

    rules = [{'glob': '/t/latched', 'profile': 'latched'}, {'glob': '/t/reliable_only', 'profile': 'events'}]
    gateway = start_gateway(processes, tmp_path, gateway={'topic_qos': rules})
    node = ros.node('rosbridge_like')
    latched = node.create_publisher(String, '/t/latched', qos.LATCHED)
    latched.publish(String(data='state 1'))
    best_effort = node.create_publisher(String, '/t/be', qos.TELEMETRY)
    node.create_publisher(String, '/t/reliable_only', qos.TELEMETRY)
    kept = []
    subscribe = {'op': 'subscribe', 'type': 'std_msgs/String'}

    async def resubscribe_until(ws, topic: str, got, what: str, tick=None) -> dict:
        """Subscribe, and subscribe afresh until `got` (the gateway must have discovered the publishers first)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await ws.send(json.dumps({**subscribe, 'id': topic, 'topic': topic}))
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                if tick is not None:
                    tick()
                try:
                    message = await recv_json(ws, 0.05)
                except TimeoutError:
                    continue
                if got(message):
                    return message
            await ws.send(json.dumps({'op': 'unsubscribe', 'id': topic, 'topic': topic}))
        raise AssertionError(f'timed out waiting for {what}')

    async def scenario() -> None:
        async with connect(gateway.url()) as first, connect(gateway.url()) as second:
            await resubscribe_until(first, '/t/latched', lambda m: m.get('msg') == {'data': 'state 1'}, 'latched')
            # the shared ROS subscription exists already: the second client gets the sample from the gateway
            await second.send(json.dumps({**subscribe, 'id': 'late', 'topic': '/t/latched'}))
            assert (await recv_json(second, 5))['msg'] == {'data': 'state 1'}

            # no topic_qos rule for /t/be: subscribed best effort like its publisher (the default profile is
            # reliable, which a best-effort publisher never reaches)
            def tick() -> None:
                best_effort.publish(String(data='telemetry'))

            await resubscribe_until(first, '/t/be', lambda m: m.get('msg') == {'data': 'telemetry'}, 'be', tick)

            # a configured reliable profile cannot match a best-effort publisher: the client is told
            def warned(m: dict) -> bool:
                return m.get('op') == 'status' and m.get('id') == '/t/reliable_only'

            warning = await resubscribe_until(second, '/t/reliable_only', warned, 'a QoS warning')
            assert warning['level'] == 'warning' and 'best-effort publisher' in warning['msg'], warning

            # advertise with latch: a transient-local publisher, so a ROS subscriber joining later gets the sample
            await first.send(
                json.dumps({'op': 'advertise', 'topic': '/t/latch_adv', 'type': 'std_msgs/String', 'latch': True})
            )
            await first.send(json.dumps({'op': 'publish', 'topic': '/t/latch_adv', 'msg': {'data': 'kept'}}))
            await first.send(json.dumps({'op': 'bogus', 'id': 'sync'}))
            assert (await recv_json(first))['id'] == 'sync'  # advertise and publish were applied
            node.create_subscription(String, '/t/latch_adv', lambda m: kept.append(m.data), qos.LATCHED)
            await _spin_until(ros, lambda: kept, 15, 'the latched sample of a latch: true advertise')

    asyncio.run(scenario())
    assert kept == ['kept']


def test_stale_telemetry_is_dropped_not_queued_for_a_client_that_falls_behind(processes, ros, tmp_path):
    """A default `websockets` client stops reading for 3 s while telemetry flows at 200 Hz. When it reads again,
    what it gets is fresh: frames older than max_staleness_ms were dropped in the gateway (counted, reported), and
    what sat in kernel buffers is bounded by the in-flight window (~16 KiB here), not by the kernels' buffer sizes."""
    from std_msgs.msg import String

    from fleet_ros import qos

    gateway = start_gateway(
        processes,
        tmp_path,
        gateway={'topic_qos': [{'glob': '/t/pose', 'profile': 'telemetry'}], 'max_staleness_ms': 300},
    )
    node = ros.node('pose_pub')
    pub = node.create_publisher(String, '/t/pose', qos.TELEMETRY)
    pad = 'p' * 100
    frame_bytes = len(json.dumps({'op': 'publish', 'topic': '/t/pose', 'msg': {'data': f'{0.0:.6f} {pad}'}}))

    async def scenario() -> tuple[list[float], list[dict]]:
        async with connect(gateway.url()) as ws:  # websockets' defaults: max_queue 16, kernel buffers autotuned
            await ws.send(json.dumps({'op': 'subscribe', 'topic': '/t/pose', 'type': 'std_msgs/String'}))
            next_at = time.monotonic()

            def publish_due() -> None:
                nonlocal next_at
                while time.monotonic() >= next_at:  # 200 Hz, stamped with the time it was due
                    pub.publish(String(data=f'{next_at:.6f} {pad}'))
                    next_at += 0.005

            first = asyncio.ensure_future(ws.recv())
            await _spin_until(ros, lambda: first.done() or publish_due(), 20, 'the first telemetry frame')
            pause_end = time.monotonic() + 3.0  # not reading: what the gateway sends piles up somewhere
            await _spin_until(ros, lambda: time.monotonic() >= pause_end or publish_due(), 10, 'the pause')
            ages: list[float] = []
            statuses: list[dict] = []
            read_end = time.monotonic() + 2.0
            while time.monotonic() < read_end:
                publish_due()
                ros.spin_once(0.0)
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 0.005))
                except TimeoutError:
                    continue
                if message['op'] == 'publish':
                    ages.append(time.monotonic() - float(message['msg']['data'].split(' ', 1)[0]))
                else:
                    statuses.append(message)
            return ages, statuses

    ages, statuses = asyncio.run(scenario())
    old = [a for a in ages if a > 1.0]
    # at most what fits in the window (plus the client's own 16-message queue) was read late; without the staleness
    # bound ~600 queued frames would be 0.3-3 s old, without the window ~1 MB of kernel buffers would be
    assert len(old) <= 2 * 16 * 1024 // frame_bytes + 16, (len(old), len(ages))
    assert len([a for a in ages if a <= 1.0]) >= 50, ages  # and fresh telemetry flows again
    assert any('older than their staleness bound' in s.get('msg', '') for s in statuses), statuses
    gateway.proc.stop()
    stale = re.findall(r"'dropped_total': (\d+)", gateway.proc.log_path.read_text())  # the last: a cluster's sum
    assert stale and int(stale[-1]) >= 200, gateway.proc.log_path.read_text()[-2000:]


def test_two_gateways_on_one_domain_are_remappable_nodes_with_described_parameters(processes, ros, tmp_path):
    """Node name and namespace come from ROS arguments, the port from a parameter: two site servers share a
    domain without clashing, and their parameters are declared, described and read-only."""
    from rcl_interfaces.srv import DescribeParameters, GetParameters

    site_a = ['--ros-args', '-r', '__node:=gateway_site_a', '-r', '__ns:=/site_a', '-p', 'port:=0']
    site_b = ['--ros-args', '-r', '__node:=gateway_site_b', '-p', 'port:=0', '-p', 'host:=127.0.0.1']
    a = start_gateway(processes, tmp_path, name='gw_a', gateway={'port': 9}, extra_args=site_a)
    b = start_gateway(processes, tmp_path, name='gw_b', gateway={'port': 9}, extra_args=site_b)
    assert a.port != b.port and 9 not in (a.port, b.port)  # the parameter won over the file's port
    node = ros.node('graph_probe')
    wanted = {('gateway_site_a', '/site_a'), ('gateway_site_b', '/')}
    wait_for(
        lambda: wanted <= set(node.get_node_names_and_namespaces()), 20, what='both gateway nodes', tick=ros.spin_once
    )
    describe = node.create_client(DescribeParameters, '/site_a/gateway_site_a/describe_parameters')
    get = node.create_client(GetParameters, '/gateway_site_b/get_parameters')
    names = ['config_file', 'host', 'port', 'metrics_port']
    described = ros.call(lambda: describe.call_async(DescribeParameters.Request(names=names)), 30, 'descriptions')
    values = ros.call(lambda: get.call_async(GetParameters.Request(names=['host', 'port'])), 30, 'parameter values')
    by_name = {d.name: d for d in described.descriptors}
    assert set(by_name) == set(names) and all(d.read_only and d.description for d in by_name.values())
    port_range = by_name['port'].integer_range[0]
    assert (port_range.from_value, port_range.to_value) == (0, 65535)
    host, port = values.values
    assert host.string_value == '127.0.0.1' and port.integer_value == 0
