"""Lease-based leadership of one shard with epoch fencing: the leader renews a lease, standbys take over with a
higher epoch once it lapses, and a leader that sees a higher epoch steps down.

Epochs are unique per replica by construction: with `slots` = EPOCH_SLOTS, replica `slot` only ever leads with
epochs `round * EPOCH_SLOTS + slot`, the smallest such number above every epoch it has seen. Two replicas that take
over at the same moment therefore hold different epochs, and agents fence the lower one as soon as they see the
higher; no tie needs breaking. (Slots must differ between the replicas of one shard: the orchestrator's
`replica_index` parameter. A same-epoch lease from another replica means two replicas share a slot; the tie rule
below is the fallback.)"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

EPOCH_SLOTS = 100
"""Replica slots per epoch round: epoch 307 is round 3 of the replica in slot 7 (readable in decimal logs)."""


def next_epoch(above: int, slot: int, slots: int = EPOCH_SLOTS) -> int:
    """The smallest epoch of `slot` greater than `above` (slots=1: above + 1)."""
    if not 0 <= slot < slots:
        raise ValueError(f'epoch slot {slot} outside 0..{slots - 1}')
    candidate = (above // slots) * slots + slot
    return candidate if candidate > above else candidate + slots


LEADER_LEASE_MAX_WAIT_SEC = 15.0
"""How long a replica started beside a live leader (its status publisher is in the graph) waits for its lease."""
LEADER_EVIDENCE_LEASES = 2.0
"""Extra lease periods a replica that never saw a lease waits while agents' heartbeats report an epoch."""
COLD_START_STAGGER_SLOTS = 8
"""At a cold start, replica slot s waits (s % 8) renew periods longer, so that one replica usually leads first and
the other follows its lease instead of racing it (harmless either way: epochs are unique, the lower one steps down
and hands its work over)."""


def first_lease_wait(
    config: LeaseConfig,
    *,
    slot: int,
    leader_in_graph: bool,
    others_on_lease_topic: bool,
    agents_epoch: int,
    standby_peer_in_graph: bool = False,
) -> float:
    """Seconds a replica that never saw a lease waits before it leads, from when it became eligible.

    Only a leader has a status publisher, so `leader_in_graph` means a live leader whose latched lease is on its way
    (discovery on a loaded host can take seconds): wait for it, up to LEADER_LEASE_MAX_WAIT_SEC (a dead leader's
    endpoints are never discovered by a process started after its death). Otherwise first_lease_wait_sec (at least a
    lease), twice that while nobody else is on the lease topic yet (discovery has shown nothing, a live leader
    included), plus LEADER_EVIDENCE_LEASES lease periods while agents report an epoch (some leader commanded them:
    alive and not yet discovered, or dead), plus the slot's stagger. The agents' evidence is dropped once
    `standby_peer_in_graph`: another replica's lease publisher is discovered and it has no status publisher, so the
    replica discovery has shown does not lead (a cold restart of the shard, where both replicas come back together);
    a leader would have a status publisher, and its latched lease would follow its discovery within moments."""
    if leader_in_graph:
        return LEADER_LEASE_MAX_WAIT_SEC
    wait = max(config.first_lease_wait_sec, config.lease_sec)
    if not others_on_lease_topic:
        wait *= 2
    if agents_epoch > 0 and not standby_peer_in_graph:
        wait += LEADER_EVIDENCE_LEASES * config.lease_sec
    return wait + (slot % COLD_START_STAGGER_SLOTS) * config.renew_period_sec


class LeadershipError(RuntimeError):
    """Base class of leadership errors."""


class LeaseConfigError(ValueError):
    """A lease setting that cannot work; the message names the key."""


class WrongShardLease(LeadershipError):
    """A lease for another site or shard reached this orchestrator: it was started with the wrong shard id."""


class NotLeader(LeadershipError):
    """Renewing or commanding without holding the lease (never took over, or fenced by a newer epoch)."""


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    """`leadership:` block of the fleet config."""

    lease_sec: float = 1.0
    renew_period_sec: float = 0.25
    takeover_grace_sec: float = 0.0  # extra wait after a lapse, e.g. to absorb a GC pause of the leader
    first_lease_wait_sec: float = 2.0  # with no lease ever seen, wait this long after start (DDS discovery)
    stall_limit_sec: float = 5.0
    """How long a leader whose executor thread is stalled (one long callback, a backlog, a CPU-starved host) keeps its
    lease: renewal runs beside the executor (LeaseState.keep_alive) while the executor last polled the lease at
    most this long ago. A killed leader is still replaced after lease_sec; a hung one after about this plus lease_sec.
    The default is measured: in ten 500-robot demo runs on a loaded 2-core host (load average 5 to 50), leaders'
    executors stalled past the 1 s lease 34 times, longest 3.6 s (a flush whose outcomes feed the mission, which
    submits and journals the next steps; a takeover of a busy shard), as logged by LeaseKeeper."""

    def __post_init__(self) -> None:
        for key in ('lease_sec', 'renew_period_sec'):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise LeaseConfigError(f'leadership.{key} must be a positive number of seconds, got {value!r}')
        if not (math.isfinite(self.stall_limit_sec) and self.stall_limit_sec >= 0):
            raise LeaseConfigError(f'leadership.stall_limit_sec must be >= 0, got {self.stall_limit_sec!r}')
        for key in ('takeover_grace_sec', 'first_lease_wait_sec'):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise LeaseConfigError(f'leadership.{key} must be >= 0, got {value!r}')
        if self.renew_period_sec >= self.lease_sec:
            raise LeaseConfigError('leadership.renew_period_sec must be shorter than leadership.lease_sec')


@dataclass(frozen=True, slots=True)
class Lease:
    """fleet_interfaces/LeaderLease, field for field (stamp in UTC seconds on the leader's clock)."""

    site_id: str
    shard_id: str
    leader_id: str
    epoch: int
    last_seq_hint: int
    stamp: float
    lease_sec: float


class LeaseState:
    """One orchestrator's view of its shard's lease, leader or standby. Lapses are judged by when this process
    received the lease on its own clock, never by the leader's stamp, so clock skew between hosts cannot trigger or
    delay a takeover.

    Thread-safe: the executor thread observes and renews, and a keeper thread may renew beside it (`keep_alive`),
    so that a renewal is never queued behind bulk work on the executor."""

    def __init__(
        self,
        *,
        site_id: str,
        shard_id: str,
        node_id: str,
        config: LeaseConfig,
        clock: Callable[[], float],
        slot: int = 0,
        slots: int = 1,
    ) -> None:
        next_epoch(0, slot, slots)  # validates the slot
        self.slot = slot
        self.slots = slots
        self.site_id = site_id
        self.shard_id = shard_id
        self.node_id = node_id
        self.config = config
        self._clock = clock
        self._started_at = clock()
        self._current: Lease | None = None  # the newest lease seen (ours or another's)
        self._received_at = self._started_at
        self._max_epoch = 0
        self._leading = False
        self._last_renewal = -math.inf
        self._rebase = False  # we won a same-epoch tie: move to a fresh epoch at the next renewal
        self._polled_at = -math.inf  # when the executor last asked whether to renew (its liveness, for keep_alive)
        self.journaled = 0
        """Journal entries the leader published in its current epoch (LeaderLease last_seq_hint): a standby that
        received fewer notices a gap (fleet_core.shard_journal.JournalGapDetector)."""
        self.last_journaled = ''
        """The key of the last of them (`journal_entry_key`), '' while none: sent with a snapshot marker."""
        self.kept_alive = 0
        """Renewals made by keep_alive while the executor was stalled past the renew period."""
        self.longest_stall = 0.0
        """The longest executor stall (seconds without a poll) seen while leading."""
        self._lock = threading.RLock()

    @property
    def epoch(self) -> int:
        """Our epoch while leading, else the newest epoch seen."""
        return self._current.epoch if self._current else 0

    @property
    def leading(self) -> bool:
        """We took over (or renewed) and saw nothing newer since; is_leader also checks the lease has not lapsed."""
        return self._leading

    @property
    def max_epoch_seen(self) -> int:
        return self._max_epoch

    @property
    def current(self) -> Lease | None:
        return self._current

    def is_leader(self, now: float | None = None) -> bool:
        """True while we hold the newest epoch and our own lease has not lapsed (a paused leader stops at once)."""
        now = self._clock() if now is None else now
        return self._leading and now < self._last_renewal + self.config.lease_sec

    def note_epoch(self, epoch: int) -> None:
        """An epoch seen elsewhere (an agent's highest_epoch_seen, a fencing rejection): above ours, we step down."""
        with self._lock:
            self._note_epoch(epoch)

    def _note_epoch(self, epoch: int) -> None:
        self._max_epoch = max(self._max_epoch, epoch)
        if self._leading and self._current is not None and epoch > self._current.epoch:
            self._leading = False
            self._received_at = self._clock()  # as above: whoever holds the newer epoch gets a lease period

    def observe(self, lease: Lease) -> bool:
        """Take in a published lease; False when its epoch is below the newest one known here (from any source: a
        lease, note_epoch, our own takeover). Raises WrongShardLease."""
        with self._lock:
            return self._observe(lease)

    def _observe(self, lease: Lease) -> bool:
        if (lease.site_id, lease.shard_id) != (self.site_id, self.shard_id):
            raise WrongShardLease(
                f'orchestrator {self.node_id} is configured for {self.site_id}/{self.shard_id} but received the lease '
                f'of {lease.site_id}/{lease.shard_id} from {lease.leader_id}: check its shard_id parameter'
            )
        if lease.leader_id == self.node_id:
            return False  # our own renewal echoed back
        if lease.epoch < self._max_epoch:
            # Below an epoch known here (a newer lease, this replica's own journal, an agent's report): that leader
            # is fenced at the agents already. Following it would hand it work it must refuse (a cold restart where
            # the replica that lost its journal leads first); it learns of the newer epoch and leads above it.
            return False
        self._max_epoch = lease.epoch
        current = self._current
        # Two standbys took over at once with the same epoch. The higher leader_id keeps it; the other steps down.
        # The keeper re-takes with a fresh epoch at its next renewal so agents fence the loser.
        tie = current is not None and lease.epoch == current.epoch and lease.leader_id != current.leader_id
        if tie and self._leading and self.node_id > lease.leader_id:
            self._rebase = True
            return False
        self._leading = False
        self._current = lease
        self._received_at = self._clock()
        return True

    def restart_first_wait(self, now: float | None = None) -> None:
        """Count first_lease_wait_sec from `now` when no lease was seen yet: call it once the lease subscription
        exists and the node becomes eligible (creating a big node's endpoints can take longer than the wait)."""
        if self._current is None:
            self._started_at = self._received_at = self._clock() if now is None else now

    def should_take_over(self, now: float | None = None) -> bool:
        """True for a standby once the newest lease is older than lease_sec + takeover_grace_sec, or, if none was
        ever seen, once first_lease_wait_sec passed since our start (a live leader's latched lease needs DDS
        discovery to arrive; leading before it did would only cause a same-epoch tie)."""
        now = self._clock() if now is None else now
        if self._leading:
            return False
        if self._current is None:
            return now >= self._started_at + max(self.config.first_lease_wait_sec, self.config.lease_sec)
        return now >= self._received_at + self._current.lease_sec + self.config.takeover_grace_sec

    def take_over(self, *, last_seq_hint: int | None = None, now: float | None = None) -> Lease:
        """Become leader with the next epoch of our slot above every epoch seen; return the lease to publish."""
        now = self._clock() if now is None else now
        with self._lock:
            self._max_epoch = next_epoch(self._max_epoch, self.slot, self.slots)
            self._leading = True
            self._rebase = False
            self._polled_at = now
            self.journaled = 0
            self.last_journaled = ''
            return self._issue(self._max_epoch, last_seq_hint, now)

    def note_journaled(self, entries: int, last: str = '') -> None:
        """The leader published `entries` more journal entries in its epoch (counted in the next lease), the last
        with key `last`."""
        with self._lock:
            self.journaled += entries
            if entries:
                self.last_journaled = last

    def should_renew(self, now: float | None = None) -> bool:
        """Asked by the executor thread (it also tells keep_alive that the executor is alive)."""
        now = self._clock() if now is None else now
        with self._lock:
            if self._leading:
                self.longest_stall = max(self.longest_stall, now - self._polled_at)
            self._polled_at = now
            return self._leading and now >= self._last_renewal + self.config.renew_period_sec

    def executor_stall(self, now: float | None = None) -> float:
        """Seconds since the executor last polled should_renew."""
        now = self._clock() if now is None else now
        return max(0.0, now - self._polled_at)

    def keep_alive(self, now: float | None = None, *, every: float | None = None) -> Lease | None:
        """The keeper thread's renewal, beside the executor: the lease to publish when one is due (`every` seconds
        after the last renewal, renew_period_sec by default), we still lead, our lease has not lapsed, and the
        executor polled should_renew within stall_limit_sec (it is busy, not hung); else None. It never steps down: a
        lapse is left to the executor's own renew(), which raises NotLeader."""
        now = self._clock() if now is None else now
        due = self.config.renew_period_sec if every is None else every
        with self._lock:
            if not self._leading or self._current is None or self._rebase:
                return None
            if now >= self._last_renewal + self.config.lease_sec:
                return None
            if now < self._last_renewal + due:
                return None
            stalled = now - self._polled_at
            if stalled > self.config.stall_limit_sec:
                return None
            if stalled > self.config.renew_period_sec:
                self.kept_alive += 1
            return self._issue(self._current.epoch, None, now)

    def renew(self, *, last_seq_hint: int | None = None, now: float | None = None) -> Lease:
        """Extend our lease; raises NotLeader when fenced or when our own lease already lapsed (we were paused
        long enough for a standby to take over, so we must not act as leader again without observing).
        `last_seq_hint` defaults to the journal entries published in this epoch."""
        now = self._clock() if now is None else now
        with self._lock:
            return self._renew(last_seq_hint, now)

    def _renew(self, last_seq_hint: int | None, now: float) -> Lease:
        if not self._leading or self._current is None:
            raise NotLeader(f'{self.node_id} does not lead {self.site_id}/{self.shard_id} (epoch {self._max_epoch})')
        if now >= self._last_renewal + self.config.lease_sec:
            self._leading = False
            # Our own lapsed lease counts as just seen: a standby that noticed the lapse gets a full lease period
            # to take over before we may try again, instead of both taking over at once.
            self._received_at = now
            raise NotLeader(
                f'{self.node_id}: lease of epoch {self._current.epoch} lapsed before renewal; stepping down'
            )
        epoch = self._current.epoch
        if self._rebase:
            self._max_epoch = next_epoch(self._max_epoch, self.slot, self.slots)
            epoch = self._max_epoch
            self._rebase = False
        return self._issue(epoch, last_seq_hint, now)

    def _issue(self, epoch: int, last_seq_hint: int | None, now: float) -> Lease:
        self._max_epoch = max(self._max_epoch, epoch)
        lease = Lease(
            site_id=self.site_id,
            shard_id=self.shard_id,
            leader_id=self.node_id,
            epoch=epoch,
            last_seq_hint=self.journaled if last_seq_hint is None else last_seq_hint,
            stamp=now,
            lease_sec=self.config.lease_sec,
        )
        self._current = lease
        self._received_at = now
        self._last_renewal = now
        return lease


@dataclass(frozen=True, slots=True)
class FirstLeaseEvidence:
    """What a replica that never saw a lease knows of a leader it may not have discovered yet (first_lease_wait)."""

    leader_in_graph: bool
    others_on_lease_topic: bool
    agents_epoch: int
    standby_peer_in_graph: bool = False
    """Another replica's lease publisher is in the graph (and, with leader_in_graph False, it does not lead)."""


class Candidacy:
    """When a standby replica leads: it is eligible (its node is active), the lease lapsed (LeaseState.
    should_take_over), no first lease is on its way (first_lease_wait, counted from when it became eligible), and
    all of that still holds one check later: lease messages queued behind a slow callback of the replica's own are
    processed in between, so its own stall cannot pass for the leader's death. Evidence is asked for only when the
    replica never saw a lease and the rest holds (the node reads it from the graph)."""

    def __init__(self, lease: LeaseState) -> None:
        self.lease = lease
        self.eligible = False
        self.eligible_since = 0.0
        self._lapse_seen = False

    def activate(self, now: float) -> None:
        self.eligible = True
        self.eligible_since = now
        self.lease.restart_first_wait(now)

    def first_lease_on_its_way(self, now: float, evidence: Callable[[], FirstLeaseEvidence]) -> bool:
        """Never saw a lease, and it is too early to give up waiting for one."""
        if self.lease.current is not None:
            return False
        seen = evidence()
        wait = first_lease_wait(
            self.lease.config,
            slot=self.lease.slot,
            leader_in_graph=seen.leader_in_graph,
            others_on_lease_topic=seen.others_on_lease_topic,
            agents_epoch=seen.agents_epoch,
            standby_peer_in_graph=seen.standby_peer_in_graph,
        )
        return now - self.eligible_since < wait

    def lapse_confirmed(self, now: float, evidence: Callable[[], FirstLeaseEvidence]) -> bool:
        """Called once per check (the node's tick) while standing by: True when the lapse held at this check and
        the previous one."""
        lapsed = self.eligible and self.lease.should_take_over(now) and not self.first_lease_on_its_way(now, evidence)
        confirmed = lapsed and self._lapse_seen
        self._lapse_seen = lapsed
        return confirmed
