"""A gateway cluster (`fleet_gateway --workers 2`): connections spread over both workers, admission and served names
hold for the whole cluster, metrics per worker and summed, a killed worker is restarted, SIGINT stops everything.
Also the shared state itself (`transport.shared`) between two processes' worth of handles on one runtime directory."""

from __future__ import annotations

import asyncio
import http
import json
import os
import signal
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_gateway_helpers import Gateway, start_gateway
from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

from fleet_gateway.acl import Principal, TokenStore
from fleet_gateway.backoff import Backoff
from fleet_gateway.config import AdmissionConfig, GatewayConfig, load_acl
from fleet_gateway.server import GatewayServer
from fleet_gateway.transport.shared import (
    CLAIMS_DIR,
    STATE_FILE,
    ClaimFiles,
    NameTaken,
    Shared,
    SharedFailureLimiter,
    SharedTable,
    SharedTokenBucket,
    WorkerCounts,
)
from fleet_gateway.transport.workers import ENV_DIR, ENV_PARENT, ENV_WORKER, METRICS_DIR, start_worker
from fleet_ros.processes import stop_child
from harness.processes import wait_exit

MAX_CLIENTS = 24
NODE, NAMESPACE = 'gw', '/cluster_names'


def _worker_of(ws: ClientConnection) -> int:
    server = ws.response.headers['Server'] if ws.response is not None else ''
    return int(server.rsplit('worker ', 1)[1].rstrip(')'))


def _scrape(gateway: Gateway) -> dict[tuple[str, str], float]:
    """(metric sample name, worker label) -> value from the cluster's /metrics."""
    assert gateway.ready is not None
    with urllib.request.urlopen(f'http://127.0.0.1:{gateway.ready["metrics_port"]}/metrics', timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, sample.labels.get('worker', '')): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _ready(tmp_path: Path) -> dict:
    return json.loads((tmp_path / 'gateway.ready').read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _reconnect(url: str) -> ClientConnection:
    """As a client should: retry with the documented jittered backoff (bounded attempts)."""
    backoff = Backoff(initial=0.2, maximum=2.0)
    for _attempt in range(30):
        try:
            return await connect(url, open_timeout=5)
        except (OSError, InvalidStatus, TimeoutError):
            await asyncio.sleep(backoff.next_delay())
    raise AssertionError('could not reconnect')


@pytest.mark.system
def test_cluster_spreads_admits_claims_restarts_and_stops(processes, ros, tmp_path):
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    admission = {'max_clients': MAX_CLIENTS, 'rate': 1000, 'burst': 1000}
    # metrics_port from a params file keyed by the node's (remapped) name: worker 0 gets it, and so must worker 1
    params = tmp_path / 'params.yaml'
    params.write_text(yaml.safe_dump({f'{NAMESPACE}/{NODE}': {'ros__parameters': {'metrics_port': 0}}}))
    ros_args = ['--ros-args', '-r', f'__node:={NODE}', '-r', f'__ns:={NAMESPACE}', '--params-file', str(params)]
    gateway = start_gateway(processes, tmp_path, workers=2, gateway={'admission': admission}, extra_args=ros_args)
    assert gateway.ready is not None
    first_pids = gateway.ready['workers']
    assert len(first_pids) == 2 and all(_alive(pid) for pid in first_pids)
    node = ros.node('cluster_probe')
    _check_node_names(ros, node)
    pub = node.create_publisher(String, '/t/cluster', 10)

    async def scenario() -> None:
        clients = [await connect(gateway.url()) for _ in range(MAX_CLIENTS)]
        on = [_worker_of(ws) for ws in clients]
        assert set(on) == {0, 1}, on  # the kernel spread them over both workers
        with pytest.raises(InvalidStatus) as refused:  # the limit is the cluster's, not each worker's
            await connect(gateway.url())
        assert refused.value.response.status_code == 503

        def per_worker() -> bool:
            figures = _scrape(gateway)
            wanted = {('fleet_gateway_clients', str(w)): float(on.count(w)) for w in (0, 1)}
            wanted[('fleet_gateway_clients', 'sum')] = float(MAX_CLIENTS)
            return all(figures.get(key) == value for key, value in wanted.items())

        await _wait_async(per_worker, 10, 'per-worker and summed client counts in the cluster metrics')

        # a service served by a client of one worker is refused to a client of the other
        a, b = clients[on.index(0)], clients[on.index(1)]
        await a.send(json.dumps({'op': 'advertise_service', 'service': '/served/one', 'type': 'std_srvs/srv/Trigger'}))
        await _wait_async(lambda: node.count_services('/served/one') > 0, 20, 'the served service in ROS', ros)
        refusal = {'op': 'advertise_service', 'id': 'second', 'service': '/served/one', 'type': 'std_srvs/srv/Trigger'}
        await b.send(json.dumps(refusal))
        status = await _next(b, lambda m: m.get('op') == 'status' and m.get('id') == 'second')
        assert 'already served through the gateway by another client' in status['msg'], status
        await a.close()  # its claim is released with the session: the other worker's client may serve it now
        for attempt in range(20):
            await b.send(json.dumps({**refusal, 'id': f'retry{attempt}'}))
            try:
                await _next(b, lambda m, n=attempt: m.get('op') == 'status' and m.get('id') == f'retry{n}', 1.0)
            except TimeoutError:
                break  # no refusal: b serves it
        else:
            raise AssertionError('the name was never released')
        caller = node.create_client(Trigger, '/served/one')
        await _wait_async(caller.service_is_ready, 20, 'the service served by the other worker', ros)
        caller.call_async(Trigger.Request())
        request = await _next(b, lambda m: m.get('op') == 'call_service', 10)
        assert request['service'] == '/served/one', request

        # kill -9 worker 1: restarted; its clients reconnect (with backoff) and are admitted and served
        victim = first_pids[1]
        lost = on.count(1)
        os.kill(victim, signal.SIGKILL)
        await _wait_async(lambda: _ready(tmp_path)['workers'][1] not in (None, victim), 30, 'worker 1 restarted')
        assert _ready(tmp_path)['workers'][0] == first_pids[0] and _ready(tmp_path)['restarts'] == [0, 1]
        survivors = [ws for ws, w in zip(clients, on, strict=True) if w == 0 and ws is not a]
        back = [await _reconnect(gateway.url()) for _ in range(lost)]  # its dead sessions no longer count
        await _wait_async(
            lambda: _scrape(gateway).get(('fleet_gateway_clients', 'sum')) == float(len(survivors) + lost),
            15,
            'the reconnected clients in the summed metrics',
        )
        reader = back[-1]
        await reader.send(
            json.dumps({'op': 'subscribe', 'id': 'sub', 'topic': '/t/cluster', 'type': 'std_msgs/String'})
        )
        deadline = time.monotonic() + 20
        got = None
        while got is None and time.monotonic() < deadline:
            pub.publish(String(data='after-restart'))
            try:
                got = await _next(reader, lambda m: m.get('op') == 'publish', 0.3)
            except TimeoutError:
                continue
        assert got is not None and got['msg'] == {'data': 'after-restart'}, got
        for ws in [*survivors, *back, b]:
            await ws.close()

    asyncio.run(scenario())

    # SIGINT to the parent stops every worker; the parent exits 0 and leaves no process or runtime directory
    final = _ready(tmp_path)
    runtime_dir = Path(final['runtime_dir'])
    gateway.proc.signal(signal.SIGINT)
    assert wait_exit(gateway.proc, 20) == 0
    assert not any(_alive(pid) for pid in final['workers'] if pid), final
    assert not runtime_dir.exists()
    assert 'cluster stopped:' in gateway.proc.output()


def _check_node_names(ros, node) -> None:
    """Worker 0 is the configured node, worker 1 `<name>_w1`, no name twice in the graph, and both got the value the
    params file keyed by the configured name sets (worker 1 from worker 0)."""
    from rcl_interfaces.srv import GetParameters

    workers = {(NODE, NAMESPACE), (f'{NODE}_w1', NAMESPACE)}
    ros.spin_until(lambda: workers <= set(node.get_node_names_and_namespaces()), 30, f'the nodes {workers}')
    graph = Counter(node.get_node_names_and_namespaces())
    assert not [name for name, count in graph.items() if count > 1], graph
    request = GetParameters.Request(names=['metrics_port'])
    for name in (NODE, f'{NODE}_w1'):
        client = node.create_client(GetParameters, f'{NAMESPACE}/{name}/get_parameters')
        ros.spin_until(client.service_is_ready, 30, f'the parameter service of {name}')
        reply = ros.call(lambda c=client: c.call_async(request), 30, f'the parameters of {name}')
        assert reply.values[0].integer_value == 0, (name, reply)
        node.destroy_client(client)


async def _wait_async(predicate, timeout: float, what: str, ros=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ros is not None:
            ros.spin_once(0.0)
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f'timed out after {timeout:g} s waiting for {what}')


async def _next(ws: ClientConnection, predicate, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        try:
            message = json.loads(await asyncio.wait_for(ws.recv(), left))
        except ConnectionClosed as exc:
            raise AssertionError(f'connection closed: {exc}') from exc
        if predicate(message):
            return message


def test_shared_state_is_one_for_every_handle_on_the_runtime_directory(tmp_path):
    """Two workers' handles: one admission rate, admission sums rows, failures per address count wherever they
    happen, a served name is held by one holder until released, and a restarted worker's row starts empty."""
    table = SharedTable.create(tmp_path / STATE_FILE, 2)
    (tmp_path / CLAIMS_DIR).mkdir()
    other = SharedTable.open(tmp_path / STATE_FILE)
    zero, one = WorkerCounts(table, 0), WorkerCounts(other, 1)
    zero.publish(3, 1)
    one.publish(2, 4)
    assert zero.totals() == one.totals() == (5, 5)
    assert WorkerCounts(table, 1).totals() == (3, 1)  # worker 1 restarted: its predecessor's sessions are gone
    assert not one.admit((1, 2), 1, 2) and one.totals() == (3, 1)  # 1 + 2 waiting > 2: refused, nothing written
    assert one.admit((1, 1), 1, 2) and zero.totals() == (4, 2)  # the last place
    assert one.admit((2, 1), 0, 4) is False and one.admit((1, 2), 0, 4)  # only the pool that grows is checked

    now = [100.0]
    here = SharedFailureLimiter(table, 1.0, 3, clock=lambda: now[0])
    there = SharedFailureLimiter(other, 1.0, 3, clock=lambda: now[0])
    for limiter in (here, there, here):
        assert limiter.retry_after('10.0.0.1') == 0
        limiter.record('10.0.0.1')
    assert there.retry_after('10.0.0.1') == pytest.approx(1.0)  # three failures on two workers: one budget
    assert here.retry_after('10.0.0.2') == 0  # another address is unaffected
    now[0] += 1.0
    assert here.retry_after('10.0.0.1') == 0

    gate = SharedTokenBucket(table, 1.0, 2, clock=lambda: now[0])
    other_gate = SharedTokenBucket(other, 1.0, 2, clock=lambda: now[0])
    assert gate.try_take() and other_gate.try_take()
    assert not gate.try_take() and not other_gate.try_take()  # one burst for the cluster's new sessions
    now[0] += 1.0
    assert other_gate.try_take() and not gate.try_take()

    mine, theirs = ClaimFiles(tmp_path / CLAIMS_DIR), ClaimFiles(tmp_path / CLAIMS_DIR)
    owner, rival = object(), object()
    assert mine.claim('service', '/served/x', owner) is True
    assert mine.claim('service', '/served/x', owner) is False  # held already by the same owner
    with pytest.raises(NameTaken):
        theirs.claim('service', '/served/x', rival)
    with pytest.raises(NameTaken):
        mine.claim('service', '/served/x', rival)
    assert theirs.claim('action', '/served/x', rival) is True  # an action of the same name is another name
    mine.release('service', '/served/x', rival)  # not the holder: nothing happens
    with pytest.raises(NameTaken):
        theirs.claim('service', '/served/x', rival)
    mine.release('service', '/served/x', owner)
    assert theirs.claim('service', '/served/x', rival) is True


class _Handshake:
    """What `GatewayServer._admit` uses of a handshake's connection."""

    def __init__(self) -> None:
        self.remote_address = ('127.0.0.1', 40000)
        self.connection_lost_waiter = asyncio.get_running_loop().create_future()

    def respond(self, status: http.HTTPStatus, text: str) -> Response:
        return Response(status.value, status.phrase, Headers(), text.encode())


def test_a_cluster_counts_a_session_when_its_handshake_is_admitted(tmp_path):
    """Two workers' admission over one runtime directory, no sessions started yet: a handshake counts against the
    cluster's pools from the moment it is admitted (its client may connect again, to the other worker, before the
    first worker's session starts), and gives its place back if it never becomes a session."""
    SharedTable.create(tmp_path / STATE_FILE, 2)
    (tmp_path / CLAIMS_DIR).mkdir()
    config = GatewayConfig(port=0, admission=AdmissionConfig(max_clients=1, max_unauthenticated=3))
    tokens = TokenStore({'tok': Principal('t', 'viewer')})
    a, b = (
        GatewayServer(
            config, load_acl(None), tokens, lambda loop, on: None, Shared.cluster(tmp_path, i, config.admission)
        )
        for i in (0, 1)
    )
    anonymous, with_token = Request('/', Headers()), Request('/?token=tok', Headers())

    async def scenario() -> None:
        waiting = [_Handshake() for _ in range(3)]
        assert all(a._admit(h, anonymous) is None for h in waiting)
        refused = b._admit(_Handshake(), anonymous)
        assert refused is not None and refused.status_code == 503 and b'waiting to authenticate' in refused.body
        assert b._admit(_Handshake(), with_token) is None  # the other pool
        full = a._admit(_Handshake(), with_token)
        assert full is not None and full.status_code == 503 and b'limit of 1 clients' in full.body
        waiting[0].connection_lost_waiter.set_result(None)  # that client left before its session started
        await asyncio.sleep(0)
        assert b._admit(_Handshake(), anonymous) is None

    asyncio.run(scenario())


@pytest.mark.system
def test_a_worker_stopped_while_it_imports_exits_quietly(tmp_path):
    """The parent stops a worker that is still importing (SIGINT right after it started): the signal waits until the
    worker's runtime handles it, then the worker stops cleanly: exit 0, no KeyboardInterrupt traceback."""
    runtime_dir = tmp_path / 'runtime'
    (runtime_dir / CLAIMS_DIR).mkdir(parents=True)
    (runtime_dir / METRICS_DIR).mkdir()
    SharedTable.create(runtime_dir / STATE_FILE, 1).close()
    env = {**os.environ, ENV_DIR: str(runtime_dir), ENV_WORKER: '0', ENV_PARENT: str(os.getpid())}
    with (tmp_path / 'worker.log').open('wb') as log:
        worker = start_worker(['--port', '0'], env, log)
        try:
            os.kill(worker.pid, signal.SIGINT)
            code = worker.wait(timeout=60)
        finally:
            stop_child(worker)
    output = (tmp_path / 'worker.log').read_text()
    assert code == 0 and 'Traceback' not in output and 'KeyboardInterrupt' not in output, (code, output)
