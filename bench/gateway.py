"""Gateway benchmark: fanout, ingest, storm and service scenarios against a fleet_gateway subprocess on loopback.

Prints one JSON line per scenario with scenario, client (profile), clients, rate, delivered_per_s,
delivered_ratio, p50_ms, p99_ms, max_ms (the age of what was delivered), failures, gateway_cpu_s,
gateway_cpu_pct, gateway_peak_rss_mb. The ROS side (publisher, subscriber or service) runs in a helper process
(this file with --ros-helper); WebSocket clients run in this process, in two profiles: `lean` (a minimal RFC 6455
client that does not parse what it receives) and `default` (the `websockets` library at its default settings, each
message parsed with json.loads, as an ordinary application would). Ages are measured from when a message was meant
to be sent (a rate-limited publisher stamps its schedule, not the moment it got round to it; an ingest client stamps
a batch before it waits for backpressure), so time spent blocked counts (no coordinated omission).
Every load loop is bounded by a message count and a deadline. `--quick` runs a short smoke subset.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import resource
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fleet_core import stats
from fleet_ros.processes import start_child, stop_child

PAD = 'x' * 40
TOPIC_OUT = '/bench/out'
TOPIC_OUT_MAX = '/bench/out_max'
"""Fan-out at max rate publishes here: a telemetry topic (best effort) on the gateway side."""
TOPIC_IN = '/bench/in'
SERVICE = '/bench/srv'
BENCH_RECEIVE_BUFFER = 8192
"""The gateway's `receive_buffer_bytes` in this bench (its default, 32 KiB, is sized for WAN round trips)."""
MAX_RATE_CAP = 100_000  # "max" publishing is still bounded by this per-second count


def percentile(values: list[float], q: float) -> float | None:
    return stats.percentile(values, q) if values else None


# --- ROS helper process ------------------------------------------------------------------------------------


def ros_helper(mode: str, arg: str, duration: float, result_path: Path, ready_path: Path) -> None:
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.task import Future
    from std_msgs.msg import String
    from std_srvs.srv import SetBool

    from fleet_ros import qos
    from fleet_ros.runtime import ros_program

    ros = contextlib.ExitStack()  # SIGINT/SIGTERM ask the program to stop; its ordered teardown at the end
    program = ros.enter_context(ros_program('bench_ros_helper', args=[], ignore_signals_after=True))
    executor = program.executor
    node = program.add_node(Node('bench_ros_helper', context=program.context))
    result: dict[str, Any] = {}
    try:
        if mode == 'pub':
            pub = node.create_publisher(String, TOPIC_OUT_MAX if arg == 'max' else TOPIC_OUT, qos.EVENTS)
            ready_path.write_text('ready')
            deadline = time.monotonic() + 30
            wanted = int(os.environ.get('BENCH_SUBSCRIPTIONS', '1'))  # one per gateway worker with subscribers
            while pub.get_subscription_count() < wanted and time.monotonic() < deadline and not program.stop_requested:
                executor.spin_once(timeout_sec=0.01)
            go = Path(str(ready_path) + '.go')
            while not go.exists() and time.monotonic() < deadline and not program.stop_requested:
                executor.spin_once(timeout_sec=0.01)
            rate = None if arg == 'max' else float(arg)
            limit = int((rate or MAX_RATE_CAP) * duration)
            start = time.monotonic()
            end = start + duration
            sent = 0
            msg = String()
            while sent < limit and not program.stop_requested:
                now = time.monotonic()
                if now >= end:
                    break
                due = now
                if rate is not None:
                    due = start + sent / rate
                    if now < due:
                        executor.spin_once(timeout_sec=min(0.002, due - now))
                        continue
                msg.data = f'{sent} {due:.6f} {PAD}'  # when it was meant to be sent: lateness counts in the age
                pub.publish(msg)
                sent += 1
            result = {'published': sent, 'seconds': time.monotonic() - start}
        elif mode == 'sub':
            latencies: list[float] = []
            counter = {'n': 0, 'first': 0.0, 'last': 0.0}

            def on_msg(cdr: bytes) -> None:
                # raw CDR (no Python message object): this subscriber shares the two cores with the gateway, so
                # it should cost as little as it can; std_msgs/String is a 4-byte encapsulation header, a uint32
                # length (with the NUL) and the bytes
                now = time.monotonic()
                counter['n'] += 1
                if counter['n'] == 1:
                    counter['first'] = now
                counter['last'] = now
                if counter['n'] % 5 == 0:
                    parts = cdr[8:].split(b' ', 2)
                    if len(parts) >= 2:
                        latencies.append((now - float(parts[1])) * 1000)

            depth = int(arg) if arg.isdigit() else qos.TELEMETRY.depth
            reader_qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=depth,
                reliability=ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.VOLATILE,
            )
            node.create_subscription(String, TOPIC_IN, on_msg, reader_qos, raw=True)
            ready_path.write_text('ready')
            deadline = time.monotonic() + duration + 60
            never = Future()
            # this process only subscribes, so the executor may own the main thread: half-second slices inside the
            # EventsExecutor (not one spin_once per message from a Python loop) are what let it keep up
            while not program.stop_requested and time.monotonic() < deadline:
                executor.spin_until_future_complete(never, timeout_sec=0.5)
            result = {
                'received': counter['n'],
                'first': counter['first'],
                'last': counter['last'],
                'p50_ms': percentile(latencies, 50),
                'p99_ms': percentile(latencies, 99),
                'max_ms': max(latencies, default=None),
            }
        elif mode == 'srv':
            calls = {'n': 0}

            def serve(request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
                calls['n'] += 1
                response.success = request.data
                response.message = 'ok'
                return response

            node.create_service(SetBool, SERVICE, serve, qos_profile=qos.SERVICE_CALLS)
            ready_path.write_text('ready')
            deadline = time.monotonic() + duration + 60
            while not program.stop_requested and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            result = {'served': calls['n']}
    finally:
        result_path.write_text(json.dumps(result))
        ros.close()


# --- processes ---------------------------------------------------------------------------------------------


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str], name: str, workdir: Path) -> None:
        self.name = name
        self.log = (workdir / f'{name}.log').open('w')
        profile_dir = os.environ.get('BENCH_PROFILE_DIR')
        if profile_dir:  # py-spy samples the child (all threads); collapsed stacks in BENCH_PROFILE_DIR/<name>.txt
            native = ['--native'] if os.environ.get('BENCH_PROFILE_NATIVE') else []
            spy = ['py-spy', 'record', *native, '--format', 'raw', '-r', '200', '-o', f'{profile_dir}/{name}.txt']
            argv = [*spy, '--', *argv]
        self.popen = start_child(argv, log=self.log, env=env)

    def stop(self, grace: float = 5.0) -> None:
        stop_child(self.popen, grace)
        self.log.close()


def wait_file(path: Path, timeout: float, proc: Proc) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f'{proc.name} did not become ready (see {proc.log.name})')
        time.sleep(0.02)


class GatewayProbe:
    """CPU seconds and RSS of the gateway's processes (a cluster's parent and workers, summed), from /proc."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.ticks = os.sysconf('SC_CLK_TCK')
        self.peak_kb = 0

    def cpu(self) -> float:
        total = 0
        for pid in self.pids:
            fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / self.ticks

    def sample_rss(self) -> None:
        rss = 0
        for pid in self.pids:
            for line in Path(f'/proc/{pid}/status').read_text().splitlines():
                if line.startswith('VmRSS:'):
                    rss += int(line.split()[1])
        self.peak_kb = max(self.peak_kb, rss)

    async def idle(self, limit_s: float = 15.0, window_s: float = 0.5, busy: float = 0.1) -> float:
        """Wait until the gateway uses less than `busy` of a core over `window_s` (it may still be reading what
        the previous scenario's clients left in their sockets, or closing them), at most `limit_s`; returns the
        seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            cpu0 = self.cpu()
            await asyncio.sleep(window_s)
            if self.cpu() - cpu0 < busy * window_s:
                break
        return time.monotonic() - started

    async def sampler(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample_rss()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)


class Bench:
    def __init__(self, workdir: Path, quick: bool, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.quick = quick
        self.reader_depth = args.ingest_reader_depth
        self.client_sndbuf = args.ingest_client_sndbuf
        self.write_batch = args.ingest_write_batch
        self.receive_buffer = json.loads(args.gateway_extra).get('receive_buffer_bytes', BENCH_RECEIVE_BUFFER)
        self.env = dict(os.environ)
        self.env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
        self.env.setdefault('ROS_DOMAIN_ID', str(10 + os.getpid() % 80))
        self.token = secrets.token_urlsafe(24)
        self.env['FLEET_GATEWAY_TOKENS'] = f'{self.token}:operator:bench'
        (workdir / 'acl.yaml').write_text(
            json.dumps({'roles': {'operator': {'subscribe': ['/**'], 'publish': ['/**'], 'call_service': ['/**']}}})
        )
        (workdir / 'gw.yaml').write_text(
            json.dumps(
                {
                    'fleet_gateway': {
                        'port': 0,
                        'acl_file': 'acl.yaml',
                        'admission': {'rate': 400, 'burst': 600, 'max_clients': 3000},
                        # fan-out is reliable (100 % delivery at 100 Hz); ingest at max rate is telemetry: best
                        # effort and shallow, so a subscriber that cannot keep up loses samples (counted as the
                        # delivered_ratio) instead of queueing seconds of them
                        'default_qos': 'events',
                        # fan-out at 100 Hz / 1 kHz is reliable (every message delivered, never dropped for age);
                        # at max rate it is telemetry (best effort: a reliable subscription stalls for the writer's
                        # heartbeat period, seconds, whenever the gateway's reader history fills), bounded by
                        # max_staleness_ms (500)
                        'topic_qos': [
                            {'glob': TOPIC_IN, 'profile': 'telemetry'},
                            {'glob': TOPIC_OUT_MAX, 'profile': 'telemetry'},
                        ],
                        # a loopback/LAN deployment: what a saturating client has waiting in the gateway's kernel
                        # buffer is latency; WAN site links want the default 32 KiB (bytes per round trip)
                        'receive_buffer_bytes': BENCH_RECEIVE_BUFFER,
                        **json.loads(args.gateway_extra),
                    }
                }
            )
        )
        ready = workdir / 'gw.ready'
        self.gateway = Proc(
            [
                sys.executable,
                '-m',
                'fleet_gateway.main',
                '--config',
                str(workdir / 'gw.yaml'),
                '--ready-file',
                str(ready),
                '--log-level',
                'WARNING',
                '--workers',
                str(args.workers),
            ],
            self.env,
            'gateway',
            workdir,
        )
        self.workers = args.workers
        wait_file(ready, 30 * args.workers, self.gateway)
        info = json.loads(ready.read_text())
        self.port = info['port']
        self.url = f'ws://127.0.0.1:{self.port}/?token={self.token}'
        self.probe = GatewayProbe([self.gateway.popen.pid, *(pid for pid in info.get('workers', []) if pid)])
        self.settled_s = 0.0
        """How long the gateway took to go idle before the current scenario (reported in its line)."""
        self._helpers = 0

    def helper(self, mode: str, arg: str, duration: float) -> tuple[Proc, Path, Path]:
        self._helpers += 1
        ready = self.workdir / f'helper{self._helpers}.ready'
        result = self.workdir / f'helper{self._helpers}.json'
        proc = Proc(
            [sys.executable, __file__, '--ros-helper', mode, arg, str(duration), str(result), str(ready)],
            self.env,
            f'helper{self._helpers}-{mode}',
            self.workdir,
        )
        wait_file(ready, 30, proc)
        return proc, ready, result

    def finish_helper(self, proc: Proc, result: Path, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while proc.popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.stop()
        return json.loads(result.read_text()) if result.exists() else {}

    async def after_idle(self, scenario: Any) -> None:
        """Run a scenario (a coroutine) once the gateway is idle, so it does not pay for the previous one."""
        self.settled_s = await self.probe.idle()
        await scenario

    def line(self, scenario: str, clients: int, rate: Any, **values: Any) -> None:
        record = {'scenario': scenario, 'clients': clients, 'rate': rate}
        for key in ('client', 'delivered_per_s', 'delivered_ratio', 'p50_ms', 'p99_ms', 'max_ms'):
            value = values.pop(key, None)
            record[key] = round(value, 3) if isinstance(value, float) else value
        record['failures'] = values.pop('failures', 0)
        cpu = values.pop('cpu')
        record['gateway_cpu_s'] = round(cpu, 2)
        wall = values.pop('wall_s', None)
        record['gateway_cpu_pct'] = round(100 * cpu / wall, 1) if wall else None
        record['gateway_peak_rss_mb'] = round(self.probe.peak_kb / 1024, 1)
        record['gateway_workers'] = self.workers
        record.update(values)
        record['settled_s'] = round(self.settled_s, 2)
        record['loadavg_1m'] = round(os.getloadavg()[0], 2)  # the 2 cores are shared: context for every figure
        print(json.dumps(record), flush=True)

    def close(self) -> None:
        self.gateway.stop()


# --- a lean WebSocket client for the load side ------------------------------------------------------------
# The bench's own per-frame cost decides how much of the 2 cores the gateway gets, so the high-rate receivers and
# publishers use this minimal RFC 6455 client (handshake, unmasked server frames, zero-key masked client frames)
# instead of `websockets`; the service scenario and the compatibility tests use real clients.


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f'HTTP 503, retry after {retry_after} s')
        self.retry_after = retry_after


class LeanClient(asyncio.Protocol):
    def __init__(self, on_text: Any = None) -> None:
        self.on_text = on_text
        self.buffer = bytearray()
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None
        self._writable = asyncio.Event()
        self._writable.set()
        self.frames = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._writable.set()
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError('closed during handshake'))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.handshake.done():
            end = buf.find(b'\r\n\r\n')
            if end < 0:
                return
            response_head = bytes(buf[:end]).decode('latin-1')
            del buf[: end + 4]
            status = response_head.split(' ', 2)[1]
            if status == '503':
                retry = next(
                    (
                        line.split(':', 1)[1]
                        for line in response_head.split('\r\n')
                        if line.lower().startswith('retry-after')
                    ),
                    '1',
                )
                self.handshake.set_exception(RateLimited(float(retry)))
                self.transport.close()
                return
            if status != '101':
                self.handshake.set_exception(ConnectionError(f'HTTP {status}'))
                self.transport.close()
                return
            self.handshake.set_result(None)
        pos = 0
        size = len(buf)
        on_text = self.on_text
        while size - pos >= 2:
            opcode = buf[pos] & 0x0F
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], 'big')
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], 'big')
                head = 10
            if size - pos < head + length:
                break
            start = pos + head
            pos = start + length
            if opcode == 1:
                self.frames += 1
                if on_text is not None:
                    on_text(buf, start, pos)
            elif opcode == 9:  # ping -> pong
                self._write(0x8A, bytes(buf[start:pos]))
            elif opcode == 8:
                self.transport.close()
                break
        del buf[:pos]

    def _write(self, first: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            header = bytes((first, 0x80 | n))
        elif n < 65536:
            header = bytes((first, 0xFE)) + n.to_bytes(2, 'big')
        else:
            header = bytes((first, 0xFF)) + n.to_bytes(8, 'big')
        self.transport.write(header + b'\x00\x00\x00\x00' + payload)  # zero masking key: payload unchanged

    def send_text(self, text: str) -> None:
        self._write(0x81, text.encode())

    def write_frames(self, payloads: list[bytes]) -> None:
        """Several masked text frames (zero key; each payload < 126 bytes) in one transport write."""
        self.transport.write(b''.join([bytes((0x81, 0x80 | len(p))) + b'\x00\x00\x00\x00' + p for p in payloads]))

    async def drain(self) -> None:
        await self._writable.wait()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._write(0x88, (1000).to_bytes(2, 'big'))
            self.transport.close()


async def lean_connect(
    port: int,
    token: str,
    deadline: float,
    on_text: Any = None,
    write_high: int = 4096,
    sndbuf: int | None = None,
) -> LeanClient:
    """Connect and upgrade; on HTTP 503 wait Retry-After (with jitter) and try again until the deadline."""
    loop = asyncio.get_running_loop()
    while True:
        _transport, client = await loop.create_connection(lambda: LeanClient(on_text), '127.0.0.1', port)
        client.transport.set_write_buffer_limits(high=write_high)
        # a latency-aware publisher also caps its kernel send buffer (loopback autotuning would let it grow to
        # megabytes, i.e. seconds of messages, before the gateway's pushback is felt)
        sock = client.transport.get_extra_info('socket')
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf or 4 * write_high)
        key = base64.b64encode(os.urandom(16)).decode()
        client.transport.write(
            (
                f'GET /?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n'
                f'Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n'
            ).encode()
        )
        try:
            await asyncio.wait_for(client.handshake, max(0.05, deadline - time.monotonic()))
            return client
        except RateLimited as exc:
            if time.monotonic() + exc.retry_after * 0.5 > deadline:
                raise
            await asyncio.sleep(exc.retry_after * random.uniform(0.5, 1.0))


# --- clients -----------------------------------------------------------------------------------------------


async def ws_connect(url: str, deadline: float, write_limit: int = 32768) -> Any:
    """Connect, honouring the gateway's 503 Retry-After (admission control) with jitter, until the deadline."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    while True:
        try:
            return await connect(
                url,
                write_limit=write_limit,
                compression=None,
                max_size=None,
                open_timeout=max(0.5, deadline - time.monotonic()),
                ping_interval=None,
                max_queue=None,
            )
        except InvalidStatus as exc:
            if exc.response.status_code != 503 or time.monotonic() > deadline:
                raise
            retry = float(exc.response.headers.get('Retry-After', '1'))
            await asyncio.sleep(min(retry * random.uniform(0.5, 1.0), max(0.0, deadline - time.monotonic())))


PUBLISH_PREFIX = b'{"op":"publish"'
STATUS_PREFIX = b'{"op":"status"'


def _stamp_ms(buf: bytearray, start: int) -> float:
    """Milliseconds since the publisher stamped the message ("<seq> <monotonic> pad" in msg.data)."""
    at = buf.index(b'"data":"', start) + 8
    return (time.monotonic() - float(bytes(buf[at : at + 48]).split(b' ', 2)[1])) * 1000


async def default_connect(url: str, deadline: float) -> Any:
    """A `websockets` client at its default settings (buffers, max_queue, keepalive), retrying on HTTP 503."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    while True:
        try:
            return await connect(url, open_timeout=max(0.5, deadline - time.monotonic()))
        except InvalidStatus as exc:
            if exc.response.status_code != 503 or time.monotonic() > deadline:
                raise
            retry = float(exc.response.headers.get('Retry-After', '1'))
            await asyncio.sleep(min(retry * random.uniform(0.5, 1.0), max(0.0, deadline - time.monotonic())))


async def fanout(bench: Bench, clients: int, rate: str, duration: float, profile: str = 'lean') -> None:
    counts = [0] * clients
    latencies: list[float] = []
    errors: list[str] = []
    stale_reports = [0]
    last_rx = [0.0]
    first_rx = [0.0]
    sample_every = 1 if clients == 1 or profile == 'default' else 10
    subscribe = {'op': 'subscribe', 'topic': TOPIC_OUT_MAX if rate == 'max' else TOPIC_OUT, 'type': 'std_msgs/String'}

    def receiver(i: int) -> Any:
        def on_text(buf: bytearray, start: int, end: int) -> None:
            if buf.startswith(PUBLISH_PREFIX, start):
                counts[i] += 1
                last_rx[0] = time.monotonic()
                if not first_rx[0]:
                    first_rx[0] = last_rx[0]
                if counts[i] % sample_every == 0:
                    latencies.append(_stamp_ms(buf, start))
            elif buf.startswith(STATUS_PREFIX, start):
                if b'"level":"error"' in buf[start:end]:
                    errors.append(bytes(buf[start:end]).decode(errors='replace'))
                elif b'staleness bound' in buf[start:end]:
                    stale_reports[0] += 1

        return on_text

    readers: list[asyncio.Task[None]] = []
    if profile == 'lean':
        conns: list[Any] = [
            await lean_connect(bench.port, bench.token, time.monotonic() + 20, receiver(i)) for i in range(clients)
        ]
        for i, client in enumerate(conns):
            client.send_text(json.dumps({**subscribe, 'id': f's{i}'}))
    else:
        conns = [await default_connect(bench.url, time.monotonic() + 20) for _ in range(clients)]

        async def read(i: int, ws: Any) -> None:
            # what an ordinary application does: take each message as it comes and parse it
            with contextlib.suppress(Exception):
                async for text in ws:
                    message = json.loads(text)
                    if message.get('op') == 'publish':
                        now = time.monotonic()
                        counts[i] += 1
                        last_rx[0] = now
                        if not first_rx[0]:
                            first_rx[0] = now
                        latencies.append((now - float(message['msg']['data'].split(' ', 2)[1])) * 1000)
                    elif message.get('op') == 'status':
                        if message.get('level') == 'error':
                            errors.append(str(message.get('msg'))[:200])
                        elif 'staleness bound' in str(message.get('msg')):
                            stale_reports[0] += 1

        for i, ws in enumerate(conns):
            await ws.send(json.dumps({**subscribe, 'id': f's{i}'}))
            readers.append(asyncio.create_task(read(i, ws)))
    # each worker of a cluster subscribes for its own clients: publish once all are matched (with 100 clients,
    # both workers of two have some)
    bench.env['BENCH_SUBSCRIPTIONS'] = str(min(bench.workers, clients))
    proc, ready, result_path = bench.helper('pub', rate, duration)
    stop = asyncio.Event()
    sampler = asyncio.create_task(bench.probe.sampler(stop))
    cpu0 = bench.probe.cpu()
    Path(str(ready) + '.go').write_text('go')  # noqa: ASYNC240 - one tiny file before the measurement starts
    started = time.monotonic()
    deadline = started + duration + 30
    while proc.popen.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a child process
        await asyncio.sleep(0.05)
    # drain: stop once nothing arrived for 1 s (bounded by 5 s)
    drain_end = time.monotonic() + 5
    last = -1
    while time.monotonic() < drain_end and sum(counts) != last:
        last = sum(counts)
        await asyncio.sleep(1.0)
    cpu = bench.probe.cpu() - cpu0
    wall = time.monotonic() - started
    stop.set()
    await sampler
    published = bench.finish_helper(proc, result_path, 5).get('published', 0)
    for client in conns:
        if profile == 'lean':
            client.close()
        else:
            await client.close()
    for task in readers:
        task.cancel()
    total = sum(counts)
    span = max(last_rx[0] - first_rx[0], 1e-3)  # from the first to the last frame any client received
    bench.line(
        'fanout',
        clients,
        rate,
        client=profile,
        delivered_per_s=total / span,
        delivered_ratio=total / max(1, published * clients),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies, default=None),
        failures=len(errors),
        cpu=cpu,
        wall_s=wall,
        published=published,
        delivered=total,
        min_client=min(counts),
        span_s=round(span, 2),
        age_sampled_every=sample_every,
        stale_reports=stale_reports[0],
    )


async def ingest(bench: Bench, clients: int, duration: float) -> None:
    proc, _ready, result_path = bench.helper('sub', str(bench.reader_depth), duration)
    # each publisher keeps at most 4 KiB in its own write buffer, so the gateway's pushback reaches it at once
    conns = [
        await lean_connect(bench.port, bench.token, time.monotonic() + 20, sndbuf=bench.client_sndbuf)
        for _ in range(clients)
    ]
    for i, client in enumerate(conns):
        client.send_text(json.dumps({'op': 'advertise', 'id': f'a{i}', 'topic': TOPIC_IN, 'type': 'std_msgs/String'}))
    await asyncio.sleep(1.0)  # let DDS match the gateway's publisher with the helper's subscriber
    sent = [0] * clients
    limit = int(MAX_RATE_CAP * duration)
    stop = asyncio.Event()
    sampler = asyncio.create_task(bench.probe.sampler(stop))
    cpu0 = bench.probe.cpu()
    started = time.monotonic()
    end = started + duration

    async def writer(i: int, client: LeanClient) -> None:
        # pre-framed: a batch of frames (each stamped when built) goes out in one write
        head = f'{{"op":"publish","topic":"{TOPIC_IN}","msg":{{"data":"'
        batch = bench.write_batch
        while time.monotonic() < end and sent[i] < limit:
            n = sent[i]
            stamp = f'{time.monotonic():.6f}'
            frames = [f'{head}{n + k} {stamp} {PAD}"}}}}'.encode() for k in range(batch)]
            await client.drain()  # stamped before waiting: time blocked by the gateway's pushback counts
            client.write_frames(frames)
            sent[i] = n + batch
            await asyncio.sleep(0)

    await asyncio.gather(*(writer(i, c) for i, c in enumerate(conns)))
    for client in conns:
        client.close()
    cpu = bench.probe.cpu() - cpu0
    wall = time.monotonic() - started
    stop.set()
    await sampler
    result = bench.finish_helper(proc, result_path, 1)
    received = result.get('received', 0)
    span = max(1e-6, result.get('last', 0) - max(started, result.get('first', started)))
    bench.line(
        'ingest',
        clients,
        'max',
        client='lean',
        wall_s=wall,
        max_ms=result.get('max_ms'),
        delivered_per_s=received / span,
        delivered_ratio=received / max(1, sum(sent)),
        p50_ms=result.get('p50_ms'),
        p99_ms=result.get('p99_ms'),
        failures=0,
        cpu=cpu,
        sent=sum(sent),
        received=received,
        reader_depth=bench.reader_depth,
        receive_buffer_bytes=bench.receive_buffer,
        client_sndbuf=bench.client_sndbuf,
        write_batch=bench.write_batch,
    )


async def storm(bench: Bench, clients: int, budget: float) -> None:
    proc, ready, result_path = bench.helper('pub', '50', budget + 20)
    Path(str(ready) + '.go').write_text('go')  # noqa: ASYNC240 - one tiny file before the measurement starts
    # one warm subscriber so the helper's publisher has matched the gateway before the storm starts
    warm_seen = asyncio.get_running_loop().create_future()

    def warm_text(buf: bytearray, start: int, end: int) -> None:
        if buf.startswith(PUBLISH_PREFIX, start) and not warm_seen.done():
            warm_seen.set_result(None)

    warm = await lean_connect(bench.port, bench.token, time.monotonic() + 10, warm_text)
    warm.send_text(json.dumps({'op': 'subscribe', 'topic': TOPIC_OUT, 'type': 'std_msgs/String'}))
    await asyncio.wait_for(warm_seen, 15)
    stop = asyncio.Event()
    sampler = asyncio.create_task(bench.probe.sampler(stop))
    cpu0 = bench.probe.cpu()
    times: list[float] = []
    failures: list[str] = []
    started = time.monotonic()
    deadline = started + budget + 5
    open_conns: list[LeanClient] = []

    async def one(i: int) -> None:
        t0 = time.monotonic()
        first = asyncio.get_running_loop().create_future()

        def on_text(buf: bytearray, start: int, end: int) -> None:
            if buf.startswith(PUBLISH_PREFIX, start) and not first.done():
                first.set_result(time.monotonic())

        try:
            client = await lean_connect(bench.port, bench.token, deadline, on_text)
            open_conns.append(client)
            client.send_text(
                json.dumps({'op': 'subscribe', 'id': f's{i}', 'topic': TOPIC_OUT, 'type': 'std_msgs/String'})
            )
            times.append(await asyncio.wait_for(first, max(0.01, deadline - time.monotonic())) - t0)
        except Exception as exc:  # noqa: BLE001 - any failure to get a first message counts, with its reason
            failures.append(type(exc).__name__)

    await asyncio.gather(*(one(i) for i in range(clients)))
    cpu = bench.probe.cpu() - cpu0
    wall = time.monotonic() - started
    stop.set()
    await sampler
    for client in [*open_conns, warm]:
        client.close()
    bench.finish_helper(proc, result_path, 0.1)
    late = sum(1 for t in times if t > budget)
    bench.line(
        'storm',
        clients,
        'connect',
        client='lean',
        wall_s=wall,
        delivered_per_s=len(times) / max(max(times, default=1e-6), 1e-6),
        delivered_ratio=len(times) / clients,
        p50_ms=_ms(percentile(times, 50)),
        p99_ms=_ms(percentile(times, 99)),
        max_ms=_ms(max(times, default=None)),
        failures=len(failures) + late,
        cpu=cpu,
        budget_s=budget,
        failure_kinds=sorted(set(failures)),
    )


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


async def service(bench: Bench, clients: int, duration: float) -> None:
    proc, _ready, result_path = bench.helper('srv', '-', duration)
    conns = [await ws_connect(bench.url, time.monotonic() + 20) for _ in range(clients)]
    latencies: list[float] = []
    failures: list[str] = []
    done = [0]
    stop = asyncio.Event()
    sampler = asyncio.create_task(bench.probe.sampler(stop))
    # one warm-up call so the gateway has discovered the service
    await conns[0].send(
        json.dumps(
            {'op': 'call_service', 'id': 'warm', 'service': SERVICE, 'type': 'std_srvs/SetBool', 'args': {'data': True}}
        )
    )
    await asyncio.wait_for(conns[0].recv(), 10)
    cpu0 = bench.probe.cpu()
    started = time.monotonic()
    end = started + duration

    async def caller(i: int, ws: Any) -> None:
        n = 0
        while time.monotonic() < end and n < 100_000:
            n += 1
            t0 = time.monotonic()
            await ws.send(
                json.dumps(
                    {
                        'op': 'call_service',
                        'id': f'{i}-{n}',
                        'service': SERVICE,
                        'type': 'std_srvs/SetBool',
                        'args': {'data': True},
                        'timeout': 5,
                    }
                )
            )
            try:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 6))
            except TimeoutError:
                failures.append('timeout')
                return
            if reply.get('op') != 'service_response' or reply.get('result') is not True:
                failures.append(str(reply.get('values'))[:60])
                continue
            latencies.append((time.monotonic() - t0) * 1000)
            done[0] += 1

    await asyncio.gather(*(caller(i, ws) for i, ws in enumerate(conns)))
    elapsed = time.monotonic() - started
    cpu = bench.probe.cpu() - cpu0
    stop.set()
    await sampler
    for ws in conns:
        await ws.close()
    bench.finish_helper(proc, result_path, 0.1)
    bench.line(
        'service',
        clients,
        'max',
        client='websockets',
        wall_s=elapsed,
        max_ms=max(latencies, default=None),
        delivered_per_s=done[0] / elapsed,
        delivered_ratio=None,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        failures=len(failures),
        cpu=cpu,
        calls=done[0],
        failure_kinds=sorted(set(failures))[:5],
    )


async def run(args: argparse.Namespace) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    quick = args.quick
    duration = 1.0 if quick else 3.0
    with tempfile.TemporaryDirectory(prefix='bench-gateway-') as tmp:
        bench = Bench(Path(tmp), quick, args)
        try:
            wanted = set(args.scenarios.split(','))
            if 'fanout' in wanted:
                combos = (
                    [(1, 'max'), (100, '100')]
                    if quick
                    else [(k, r) for k in (1, 10, 100) for r in ('100', '1000', 'max')]
                )
                if args.fanout:
                    combos = [(int(c), r) for c, r in (item.split(':') for item in args.fanout.split(','))]
                for profile in args.clients.split(','):
                    for clients, rate in combos:
                        await bench.after_idle(fanout(bench, clients, rate, duration, profile))
            if 'ingest' in wanted:
                default = (1, 10) if quick else (1, 10, 100)
                for clients in [int(k) for k in args.ingest_clients.split(',')] if args.ingest_clients else default:
                    await bench.after_idle(ingest(bench, clients, duration))
            if 'storm' in wanted:
                for clients, budget in ((100, 2.0),) if quick else ((500, 2.0), (1000, 5.0)):
                    await bench.after_idle(storm(bench, clients, budget))
            if 'service' in wanted:
                for clients in (10,) if quick else (10, 50):
                    await bench.after_idle(service(bench, clients, duration))
        finally:
            bench.close()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == '--ros-helper':
        mode, arg, duration, result, ready = sys.argv[2:7]
        ros_helper(mode, arg, float(duration), Path(result), Path(ready))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--quick', action='store_true', help='short smoke run')
    parser.add_argument('--scenarios', default='fanout,ingest,storm,service')
    parser.add_argument(
        '--clients',
        default='lean,default',
        help='fan-out client profiles: lean (minimal, no parsing) and/or default (websockets at its defaults)',
    )
    parser.add_argument('--fanout', help='fan-out combinations "clients:rate,..." (e.g. 100:max,100:100)')
    parser.add_argument('--ingest-clients', help='comma-separated client counts for ingest (default 1,10,100)')
    parser.add_argument(
        '--ingest-reader-depth',
        type=int,
        default=1000,
        help='KEEP_LAST depth of the best-effort ingest subscriber (1000: 50 ms at 20 kHz; 5 loses whatever arrives '
        'while the subscriber is descheduled on a shared 2-core machine)',
    )
    parser.add_argument(
        '--ingest-client-sndbuf',
        type=int,
        default=1024,
        help='SO_SNDBUF of each ingest client (the kernel raises 1024 to its minimum, 4608): what a client keeps in '
        'its own send buffer waits there, and counts in the latency',
    )
    parser.add_argument('--ingest-write-batch', type=int, default=10, help='frames per write of an ingest client')
    parser.add_argument('--gateway-extra', default='{}', help='JSON merged into the fleet_gateway config section')
    parser.add_argument('--workers', type=int, default=1, help='fleet_gateway --workers (CPU summed over a cluster)')
    asyncio.run(run(parser.parse_args()))


if __name__ == '__main__':
    main()
