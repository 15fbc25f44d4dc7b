"""A gateway cluster: `fleet_gateway --workers N` runs N worker processes that listen on one port (SO_REUSEPORT, the
kernel spreads new connections over them), each an ordinary gateway with its own rclpy context.

The parent (`run_cluster`) starts no ROS context of its own. Before any worker starts it creates a runtime directory
(`/dev/shm` when there is one) holding what the workers share (`transport.shared`: admission counts, failed
authentications per address, served names) and starts the workers with `fleet_ros.processes`: worker 0 first (with
port 0 it picks the port), then the others on the port it bound; the parent then holds the port with a bound, never
listening SO_REUSEPORT socket of its own, so a restarted worker always finds it. A worker that dies is restarted
after a jittered, growing delay (`backoff.Backoff`, reset once a worker stayed up STABLE_S); its clients reconnect
with their own backoff and land on any worker. SIGINT or SIGTERM to the parent stops every worker (SIGINT, SIGKILL
after STOP_GRACE_S) and the parent exits 0.

Metrics: each worker writes a snapshot of `GatewayServer.stats()` (without the per-client figures) every SNAPSHOT_S
to the runtime directory; the parent serves `/metrics` on the configured `metrics_port` with every figure per worker
(label `worker`) and summed (`worker="sum"`), and logs the sum when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fleet_gateway.backoff import Backoff
from fleet_gateway.config import GatewayConfig
from fleet_gateway.metrics import serve_cluster_metrics
from fleet_gateway.transport.shared import CLAIMS_DIR, STATE_FILE, Shared, SharedTable
from fleet_ros.processes import start_child, stop_children

log = logging.getLogger('fleet_gateway.workers')

ENV_DIR = 'FLEET_GATEWAY_CLUSTER_DIR'
ENV_WORKER = 'FLEET_GATEWAY_WORKER'
ENV_PORT = 'FLEET_GATEWAY_CLUSTER_PORT'
ENV_PARENT = 'FLEET_GATEWAY_CLUSTER_PARENT'
SNAPSHOT_S = 1.0
STOP_GRACE_S = 4.0
"""Below the 5 s a supervisor of the parent grants it: the parent gets to SIGKILL a stuck worker itself."""
START_TIMEOUT_S = 60.0
STABLE_S = 30.0
"""A worker that stayed up this long before dying is restarted after the shortest delay again."""
POLL_S = 0.1
METRICS_DIR = 'metrics'


def default_workers() -> int:
    """The number of cores this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def worker_count(requested: int | None) -> int:
    count = default_workers() if requested is None else requested
    if count < 1:
        raise ValueError(f'--workers must be at least 1 (got {count})')
    return count


@dataclass(frozen=True)
class WorkerRole:
    """This process is worker `index` of the cluster whose runtime directory is `runtime_dir` (set by the parent in
    the environment)."""

    index: int
    runtime_dir: Path
    port: int | None
    """The cluster's port (None for the first start of worker 0, which picks it)."""
    parent: int = 0
    """The parent's PID: a worker whose parent is gone (killed) stops itself."""

    @staticmethod
    def from_env(environ: Mapping[str, str] = os.environ) -> WorkerRole | None:
        if ENV_DIR not in environ:
            return None
        port = environ.get(ENV_PORT)
        parent = int(environ.get(ENV_PARENT, '0'))
        return WorkerRole(int(environ[ENV_WORKER]), Path(environ[ENV_DIR]), int(port) if port else None, parent)

    @property
    def ready_file(self) -> Path:
        return self.runtime_dir / f'w{self.index}.ready'

    def node_name(self, configured: str) -> str:
        """Worker 0's node keeps the configured (remapped) name; worker k > 0's is `<name>_w<k>`: one ROS graph name
        per process, so per-node services (parameters) do not collide."""
        return configured if self.index == 0 else f'{configured}_w{self.index}'

    def first_node(self) -> tuple[str, dict[str, Any]]:
        """For worker k > 0: worker 0's node name and the values its declared parameters got (from ROS arguments,
        params files keyed by that name included), which worker 0 wrote before the others started."""
        settings = json.loads((self.runtime_dir / 'config.json').read_text())
        return str(settings['node']), dict(settings['parameters'])

    def configure(
        self, config: GatewayConfig, node: str = '', parameters: Mapping[str, Any] | None = None
    ) -> GatewayConfig:
        """The worker's config: the cluster's port; no metrics endpoint of its own (the parent serves the cluster's,
        on the configured port, which worker 0 tells it here, with its node name and parameter values)."""
        if self.index == 0:
            settings = {
                'host': config.host,
                'metrics_port': config.metrics_port,
                'node': node,
                'parameters': dict(parameters or {}),
            }
            _write_json(self.runtime_dir / 'config.json', settings)
        port = config.port if self.port is None else self.port
        return dataclasses.replace(config, port=port, metrics_port=-1)

    def shared(self, config: GatewayConfig) -> Shared:
        return Shared.cluster(self.runtime_dir, self.index, config.admission)

    async def report(self, stats: Callable[[], Mapping[str, Any]], gateway: str) -> None:
        """Write this worker's snapshot every SNAPSHOT_S until cancelled; SIGINT itself once orphaned."""
        while True:
            if self.parent and os.getppid() != self.parent:
                log.error('the cluster parent (pid %d) is gone: stopping', self.parent)
                shutil.rmtree(self.runtime_dir, ignore_errors=True)
                os.kill(os.getpid(), signal.SIGINT)
                return
            self.snapshot(stats(), gateway)
            await asyncio.sleep(SNAPSHOT_S)

    def snapshot(self, stats: Mapping[str, Any], gateway: str) -> None:
        """Write this worker's figures (also once more after its server closed, for the parent's last sum)."""
        figures = {k: v for k, v in stats.items() if k != 'per_client'}
        gateway = gateway.removesuffix(self.node_name(''))  # the cluster's name (worker 0's) labels every worker
        path = self.runtime_dir / METRICS_DIR / f'w{self.index}.json'
        with contextlib.suppress(FileNotFoundError):  # the runtime directory is gone once the parent stopped
            _write_json(path, {**figures, 'worker': self.index, 'pid': os.getpid(), 'gateway': gateway})


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


def read_snapshots(runtime_dir: Path) -> list[dict[str, Any]]:
    """The workers' latest snapshots, by worker index."""
    snapshots = []
    for path in sorted((runtime_dir / METRICS_DIR).glob('w*.json')):
        with contextlib.suppress(FileNotFoundError, ValueError):
            snapshots.append(json.loads(path.read_text()))
    return sorted(snapshots, key=lambda s: int(s['worker']))


def summed(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers added up over the workers (one level of nested counters too, e.g. `served_calls`)."""
    total: dict[str, Any] = {}
    for snapshot in snapshots:
        for key, value in snapshot.items():
            if key in ('worker', 'pid', 'time', 'gateway'):
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
            elif isinstance(value, dict):
                inner = total.setdefault(key, {})
                for name, count in value.items():
                    if isinstance(count, int | float) and not isinstance(count, bool):
                        inner[name] = inner.get(name, 0) + count
    return total


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def start_worker(argv: list[str], env: Mapping[str, str], log: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """A worker process (`python -m fleet_gateway.main argv` with the cluster's environment), started with SIGINT and
    SIGTERM blocked: a mask survives exec, so a stop signal that arrives while the worker still imports stays pending
    (no KeyboardInterrupt traceback) until its runtime handles stop signals and `unblock_stop_signals` lets it in,
    and the worker then stops cleanly."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return start_child([sys.executable, '-m', 'fleet_gateway.main', *argv], env=env, log=log)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def unblock_stop_signals() -> None:
    """In a worker, once its stop-signal handlers are installed: deliver a stop signal that came while it started."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@dataclass
class _Worker:
    index: int
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    backoff: Backoff = dataclasses.field(default_factory=lambda: Backoff(initial=0.5, maximum=30.0))


class ClusterStartError(RuntimeError):
    """A worker exited or did not become ready while the cluster started (its exit code in `code`)."""

    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.code = code


class Cluster:
    """The parent's side: runtime directory, workers, the port-holding socket, restarts, the ready file."""

    def __init__(self, argv: list[str], workers: int, ready_file: Path | None) -> None:
        self.argv = argv
        self.ready_file = ready_file
        base = '/dev/shm' if os.access('/dev/shm', os.W_OK) else None  # noqa: S108 - a private mkdtemp inside it
        self.runtime_dir = Path(tempfile.mkdtemp(prefix='fleet_gateway-', dir=base))
        (self.runtime_dir / CLAIMS_DIR).mkdir()
        (self.runtime_dir / METRICS_DIR).mkdir()
        self.table = SharedTable.create(self.runtime_dir / STATE_FILE, workers)
        self.workers = [_Worker(i) for i in range(workers)]
        self.port: int | None = None
        self.host = '127.0.0.1'
        self.metrics_port = -1
        self._hold: socket.socket | None = None
        self.metrics: Any = None
        self.stop = threading.Event()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[ENV_DIR] = str(self.runtime_dir)
        env[ENV_PARENT] = str(os.getpid())
        if self.port is not None:
            env[ENV_PORT] = str(self.port)
        return env

    def _start(self, worker: _Worker) -> None:
        (self.runtime_dir / f'w{worker.index}.ready').unlink(missing_ok=True)
        env = self._env()
        env[ENV_WORKER] = str(worker.index)
        worker.popen = start_worker(self.argv, env)
        worker.started = time.monotonic()
        worker.restart_at = None
        log.info('worker %d started (pid %d)', worker.index, worker.popen.pid)

    def _wait_ready(self, worker: _Worker) -> dict[str, Any]:
        ready = self.runtime_dir / f'w{worker.index}.ready'
        deadline = time.monotonic() + START_TIMEOUT_S
        assert worker.popen is not None  # noqa: S101 - started just before
        while not ready.exists():
            code = worker.popen.poll()
            if code is not None:
                raise ClusterStartError(f'worker {worker.index} exited with {code} while starting', code or 1)
            if self.stop.is_set():
                raise ClusterStartError('stopped while starting', 0)
            if time.monotonic() > deadline:
                raise ClusterStartError(f'worker {worker.index} not ready after {START_TIMEOUT_S:g} s', 1)
            self.stop.wait(POLL_S)
        info: dict[str, Any] = json.loads(ready.read_text())
        return info

    def start(self) -> None:
        first = self.workers[0]
        self._start(first)
        self.port = int(self._wait_ready(first)['port'])
        settings = json.loads((self.runtime_dir / 'config.json').read_text())
        self.host, self.metrics_port = settings['host'], int(settings['metrics_port'])
        self._hold = _hold_port(self.host, self.port)
        for worker in self.workers[1:]:
            self._start(worker)
        for worker in self.workers[1:]:
            self._wait_ready(worker)
        if self.metrics_port >= 0:
            self.metrics = serve_cluster_metrics(lambda: read_snapshots(self.runtime_dir), self.metrics_port)
            log.info('cluster metrics at %s', self.metrics.url)
        self._write_ready()
        log.info('%d workers serving on %s:%d', len(self.workers), self.host, self.port)

    def _write_ready(self) -> None:
        if self.ready_file is None:
            return
        pids = [w.popen.pid if w.popen is not None and w.popen.poll() is None else None for w in self.workers]
        _write_json(
            self.ready_file,
            {
                'port': self.port,
                'pid': os.getpid(),
                'metrics_port': self.metrics.port if self.metrics is not None else None,
                'workers': pids,
                'restarts': [w.restarts for w in self.workers],
                'runtime_dir': str(self.runtime_dir),
            },
        )

    def supervise(self) -> None:
        """Until `stop`: restart dead workers, each after its backoff delay."""
        while not self.stop.wait(POLL_S):
            now = time.monotonic()
            for worker in self.workers:
                if worker.popen is not None and worker.popen.poll() is not None:
                    code = worker.popen.returncode
                    worker.popen = None
                    if now - worker.started >= STABLE_S:
                        worker.backoff.reset()
                    delay = worker.backoff.next_delay()
                    worker.restart_at = now + delay
                    self.table.set_row(worker.index, 0, 0)  # its sessions died with it
                    (self.runtime_dir / METRICS_DIR / f'w{worker.index}.json').unlink(missing_ok=True)
                    log.warning('worker %d exited with %s; restarting in %.1f s', worker.index, code, delay)
                    self._write_ready()
                elif worker.popen is None and worker.restart_at is not None and now >= worker.restart_at:
                    worker.restarts += 1
                    self._start(worker)
                    self._write_ready()

    def close(self) -> None:
        stop_children([w.popen for w in self.workers if w.popen is not None], STOP_GRACE_S)
        totals = summed(read_snapshots(self.runtime_dir))
        log.info('cluster stopped: %s', totals)
        if self.metrics is not None:
            self.metrics.close()
        if self._hold is not None:
            self._hold.close()
        self.table.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def _hold_port(host: str, port: int) -> socket.socket:
    """A bound, never listening socket in the workers' SO_REUSEPORT group: the port stays the cluster's even while
    every worker restarts (a socket that does not listen gets no connections)."""
    family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def run_cluster(argv: list[str], workers: int, ready_file: Path | None) -> int:
    """The parent of `workers` gateway workers started with the same arguments `argv`; returns the exit code."""
    cluster = Cluster(argv, workers, ready_file)
    previous = {sig: signal.signal(sig, lambda _s, _f: cluster.stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        cluster.start()
        cluster.supervise()
    except ClusterStartError as exc:
        if exc.code:
            log.error('%s', exc)
        return exc.code
    finally:
        cluster.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
