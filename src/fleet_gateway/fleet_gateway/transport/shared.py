"""What a gateway's admission and its clients' served names share with other workers of a cluster, behind a narrow
interface (`Shared`) that `GatewayServer` takes: the in-process defaults (`Shared.local`) behave as a single gateway
always did; `Shared.cluster` puts the same state in a per-cluster runtime directory the parent created before any
worker started:

- the admission rate (a token bucket on new sessions, under an `flock`) and admission counts: each worker writes
  its own row (authenticated, unauthenticated sessions) of a memory-mapped table; admission checks the sums and
  writes the row with the new session in it under one `flock` (`admit`), before the handshake's response is sent,
  so `rate`/`burst`, `max_clients` and `max_unauthenticated` hold for the whole cluster;
- failed authentications per source address: a fixed open-addressing table in the same mapping, updated under an
  `flock`, so the per-address limit holds whichever worker a retry lands on;
- served names: a service or action a client serves is a file under `claims/` held with an `flock` by the worker
  serving it; the lock dies with the worker, so a crashed worker's names are free at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import mmap
import os
import struct
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fleet_gateway.config import AdmissionConfig
from fleet_gateway.ratelimit import FailureLimiter, TokenBucket, check_rule, refilled

STATE_FILE = 'state'
CLAIMS_DIR = 'claims'
_ROW = struct.Struct('=qq')
"""Per worker: authenticated sessions, unauthenticated sessions."""
_BUCKET = struct.Struct('=dd')
"""The admission token bucket: tokens, when they were counted."""
_SLOT = struct.Struct('=Qdd')
"""Per remembered address: key (a 64-bit hash of the address, 0 = free), failures it may still have, when."""
FAILURE_SLOTS = 4096
PROBES = 8
"""Slots an address may live in (from its hash on); when all are taken, the least recently failing is replaced."""


class NameTaken(Exception):
    """A service or action is already served by a client (of this worker or another)."""


class RateGate(Protocol):
    def try_take(self, amount: float = 1.0) -> bool:
        """Whether a new session may start now (the cluster's admission rate)."""


class AdmissionCounts(Protocol):
    def publish(self, authenticated: int, unauthenticated: int) -> None:
        """This gateway's current sessions (after every change)."""

    def totals(self) -> tuple[int, int]:
        """(authenticated, unauthenticated) sessions of the whole cluster."""

    def admit(self, counts: tuple[int, int], pool: int, limit: int) -> bool:
        """Publish `counts` (this gateway's sessions with a new one in `pool`: 0 authenticated, 1 unauthenticated)
        unless the cluster's total of `pool` would exceed `limit`; the check and the write are one step, so two
        gateways admitting at once cannot both take the last place. False: nothing published."""


class FailureLimit(Protocol):
    def retry_after(self, address: str) -> float: ...

    def record(self, address: str) -> None: ...


class ServedNames(Protocol):
    def claim(self, kind: str, name: str, owner: object) -> bool:
        """Take `name` (of `kind`: 'service' or 'action') for `owner`: True when newly taken, False when `owner`
        holds it already; raises NameTaken when someone else does."""

    def release(self, kind: str, name: str, owner: object) -> None:
        """Give `name` up if `owner` holds it (else nothing)."""


@dataclass(frozen=True)
class Shared:
    """The state a gateway shares with the rest of its cluster (see the module doc)."""

    new_sessions: RateGate
    admission: AdmissionCounts
    auth_failures: FailureLimit
    served: ServedNames
    reuse_port: bool = False
    """Listen with SO_REUSEPORT (the workers of a cluster share one port)."""
    worker: int | None = None
    """This worker's index in its cluster (named in the handshake's Server header), None alone."""

    @staticmethod
    def local(admission: AdmissionConfig) -> Shared:
        return Shared(
            TokenBucket(admission.rate, admission.burst),
            LocalCounts(),
            FailureLimiter(admission.auth_failure_rate, admission.auth_failure_burst),
            LocalNames(),
        )

    @staticmethod
    def cluster(runtime_dir: Path, worker: int, admission: AdmissionConfig) -> Shared:
        table = SharedTable.open(runtime_dir / STATE_FILE)
        return Shared(
            SharedTokenBucket(table, admission.rate, admission.burst),
            WorkerCounts(table, worker),
            SharedFailureLimiter(table, admission.auth_failure_rate, admission.auth_failure_burst),
            ClaimFiles(runtime_dir / CLAIMS_DIR),
            reuse_port=True,
            worker=worker,
        )


class LocalCounts:
    def __init__(self) -> None:
        self._counts = (0, 0)

    def publish(self, authenticated: int, unauthenticated: int) -> None:
        self._counts = (authenticated, unauthenticated)

    def totals(self) -> tuple[int, int]:
        return self._counts

    def admit(self, counts: tuple[int, int], pool: int, limit: int) -> bool:
        if counts[pool] > limit:
            return False
        self._counts = counts
        return True


class LocalNames:
    """One gateway alone: its ROS side tells conflicts between its own clients apart (nothing to hold here)."""

    def claim(self, kind: str, name: str, owner: object) -> bool:
        return False

    def release(self, kind: str, name: str, owner: object) -> None:
        return None


class SharedTable:
    """The memory-mapped file of a cluster: the worker count, `workers` admission rows, the admission token bucket,
    then FAILURE_SLOTS address slots."""

    def __init__(self, fd: int, workers: int) -> None:
        self.fd = fd
        self.workers = workers
        self.map = mmap.mmap(fd, self.size(workers))
        self.bucket_at = 8 + workers * _ROW.size
        self.failures_at = self.bucket_at + _BUCKET.size

    @staticmethod
    def size(workers: int) -> int:
        return 8 + workers * _ROW.size + _BUCKET.size + FAILURE_SLOTS * _SLOT.size

    @classmethod
    def create(cls, path: Path, workers: int) -> SharedTable:
        """Called by the cluster's parent before any worker starts."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.ftruncate(fd, cls.size(workers))
        os.pwrite(fd, struct.pack('=q', workers), 0)
        os.pwrite(fd, _BUCKET.pack(float('nan'), 0.0), 8 + workers * _ROW.size)  # NaN: full (set by the first user)
        return cls(fd, workers)

    @classmethod
    def open(cls, path: Path) -> SharedTable:
        fd = os.open(path, os.O_RDWR)
        (workers,) = struct.unpack('=q', os.pread(fd, 8, 0))
        return cls(fd, workers)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def set_row(self, worker: int, authenticated: int, unauthenticated: int) -> None:
        with self.locked():
            _ROW.pack_into(self.map, 8 + worker * _ROW.size, authenticated, unauthenticated)

    def _rows(self) -> list[tuple[int, int]]:
        return [_ROW.unpack_from(self.map, 8 + i * _ROW.size) for i in range(self.workers)]

    def sums(self) -> tuple[int, int]:
        with self.locked():
            rows = self._rows()
        return sum(r[0] for r in rows), sum(r[1] for r in rows)

    def set_row_within(self, worker: int, row: tuple[int, int], pool: int, limit: int) -> bool:
        """Write `worker`'s row unless the sum of column `pool` (the other rows' and `row`'s) would exceed `limit`."""
        with self.locked():
            others = sum(r[pool] for i, r in enumerate(self._rows()) if i != worker)
            if others + row[pool] > limit:
                return False
            _ROW.pack_into(self.map, 8 + worker * _ROW.size, *row)
        return True

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


class WorkerCounts:
    def __init__(self, table: SharedTable, worker: int) -> None:
        self.table = table
        self.worker = worker
        table.set_row(worker, 0, 0)  # a restarted worker's predecessor's sessions died with it

    def publish(self, authenticated: int, unauthenticated: int) -> None:
        self.table.set_row(self.worker, authenticated, unauthenticated)

    def totals(self) -> tuple[int, int]:
        return self.table.sums()

    def admit(self, counts: tuple[int, int], pool: int, limit: int) -> bool:
        return self.table.set_row_within(self.worker, counts, pool, limit)


class SharedTokenBucket:
    """`TokenBucket`'s rule (`rate` per second, at most `burst`) for new sessions of the whole cluster."""

    def __init__(
        self, table: SharedTable, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        check_rule('token bucket', rate, burst)
        self.table = table
        self.rate = rate
        self.burst = burst
        self._clock = clock

    def try_take(self, amount: float = 1.0) -> bool:
        with self.table.locked():
            tokens, stamp = _BUCKET.unpack_from(self.table.map, self.table.bucket_at)
            now = self._clock()
            tokens = self.burst if math.isnan(tokens) else refilled(tokens, stamp, now, self.rate, self.burst)
            taken = tokens >= amount
            _BUCKET.pack_into(self.table.map, self.table.bucket_at, tokens - amount if taken else tokens, now)
        return taken


def _address_key(address: str) -> int:
    return int.from_bytes(hashlib.blake2b(address.encode(), digest_size=8).digest(), 'little') or 1


class SharedFailureLimiter:
    """`FailureLimiter`'s rule (each address may fail `burst` times at once, then `rate` per second) over the shared
    table: at most FAILURE_SLOTS addresses are remembered, the least recently failing of PROBES candidates go first."""

    def __init__(
        self, table: SharedTable, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        check_rule('failure limiter', rate, burst)
        self.table = table
        self.rate = rate
        self.burst = burst
        self._clock = clock  # CLOCK_MONOTONIC: one clock for every process of the host

    def _offset(self, index: int) -> int:
        return self.table.failures_at + index * _SLOT.size

    def _find(self, key: int) -> tuple[int, tuple[int, float, float] | None]:
        """(offset of `key`'s slot or of the slot to take for it, its (key, left, stamp) when remembered)."""
        start = key % FAILURE_SLOTS
        victim, victim_stamp = -1, float('inf')
        for probe in range(PROBES):
            offset = self._offset((start + probe) % FAILURE_SLOTS)
            slot: tuple[int, float, float] = _SLOT.unpack_from(self.table.map, offset)
            if slot[0] == key:
                return offset, slot
            stamp = -1.0 if slot[0] == 0 else slot[2]
            if stamp < victim_stamp:
                victim, victim_stamp = offset, stamp
        return victim, None

    def _left(self, slot: tuple[int, float, float] | None) -> float:
        if slot is None:
            return self.burst
        return refilled(slot[1], slot[2], self._clock(), self.rate, self.burst)

    def retry_after(self, address: str) -> float:
        with self.table.locked():
            _offset, slot = self._find(_address_key(address))
            left = self._left(slot)
        return 0.0 if slot is None or left >= 1 else (1 - left) / self.rate

    def record(self, address: str) -> None:
        key = _address_key(address)
        with self.table.locked():
            offset, slot = self._find(key)
            _SLOT.pack_into(self.table.map, offset, key, self._left(slot) - 1, self._clock())


class ClaimFiles:
    """Served names as `flock`ed files, one per name; this worker's own holdings in a dict (an `flock` from a second
    descriptor of the same process would not see the first)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._held: dict[tuple[str, str], tuple[object, int]] = {}

    def _path(self, kind: str, name: str) -> Path:
        return self.root / f'{kind}-{urllib.parse.quote(name, safe="")}'

    def claim(self, kind: str, name: str, owner: object) -> bool:
        held = self._held.get((kind, name))
        if held is not None:
            if held[0] is owner:
                return False
            raise NameTaken(f'{name} is already served through the gateway by another client')
        path = self._path(kind, name)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise NameTaken(f'{name} is already served through the gateway by another client') from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its previous holder unlinked after we opened it
                self._held[(kind, name)] = (owner, fd)
                return True
            os.close(fd)

    def release(self, kind: str, name: str, owner: object) -> None:
        held = self._held.get((kind, name))
        if held is None or held[0] is not owner:
            return
        del self._held[(kind, name)]
        with contextlib.suppress(FileNotFoundError):
            self._path(kind, name).unlink()  # while still locked: nobody can hold the unlinked file meanwhile
        os.close(held[1])
