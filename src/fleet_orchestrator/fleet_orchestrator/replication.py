"""The ROS streams of a shard's hot copy: the journal, hand-over, handed-outcome and request-record topics, and the
shard's outcome stream as a standby sees it. While standing by, a replica follows the leader into its DurableShard
(fleet_orchestrator.durable: the trust gate and the journal); while leading, it replicates accepted work to its
standbys, snapshots it for followers that join, and takes what other replicas hand over. The decisions about the
work itself are the ShardLeader's; every callback runs on the node's executor thread."""

from __future__ import annotations

import collections
from collections.abc import Callable

from rclpy.node import Node
from rclpy.subscription import Subscription

from fleet_core import topics
from fleet_core.leadership import LeaseState
from fleet_core.model import Command, CommandResult
from fleet_core.shard_effects import Effects
from fleet_core.shard_journal import (
    GateVerdict,
    JournalUnavailable,
    ShardJournal,
    SubmissionRecord,
    journal_entry_key,
)
from fleet_core.shard_leader import ShardLeader
from fleet_interfaces.msg import Command as CommandMsg
from fleet_interfaces.msg import CommandOutcome, CommandOutcomes
from fleet_interfaces.msg import SubmissionRecord as SubmissionRecordMsg
from fleet_orchestrator.catch_up import CATCH_UP_MAX_SEC, HANDOFF_END, HANDOFF_REQUEST_KIND, CatchUp, HandoffAudit
from fleet_orchestrator.durable import SNAPSHOT_END_KIND, SNAPSHOT_REQUEST_KIND, DurableShard
from fleet_ros import qos
from fleet_ros.convert import command_from_msg, command_to_msg, from_time, result_from_msg, result_to_msg, to_time

OUTCOMES_PER_MESSAGE = 256
RECENT_OUTCOMES = 4096
PRUNE_EVERY_SEC = 30.0
"""How often outcomes past their retention are forgotten."""
LOG_REJECTED_EVERY = 100
"""Untrusted entries are counted; the first and then every 100th is logged."""


class ShardReplication:
    """Created at on_configure with the replica's ShardLeader, DurableShard and lease state."""

    def __init__(
        self,
        node: Node,
        leader: ShardLeader,
        durable: DurableShard,
        lease: LeaseState,
        *,
        replica_id: str,
        apply: Callable[[Effects], None],
        journal_failed: Callable[[JournalUnavailable], None],
        retention_sec: Callable[[], float],
        on_journal: Callable[[CommandMsg], None] | None = None,
    ) -> None:
        self.node = node
        self.leader = leader
        self.journal: ShardJournal = leader.journal
        self.durable = durable
        self.lease = lease
        self.replica_id = replica_id
        self._apply = apply
        self._journal_failed = journal_failed
        self._retention_sec = retention_sec
        self._journal_entry = on_journal or self.on_journal
        """Where followed journal entries go (the node routes them through its own handler, which tests wrap)."""
        self._log = node.get_logger()
        site, sid = leader.site_id, leader.shard_id
        self.site_id, self.shard_id = site, sid
        self.untrusted_entries = 0
        self.catch_up = CatchUp(0, 0.0, holds_previous=True)
        """Until done, an unknown request_id is answered 'retry' (fleet_orchestrator.catch_up)."""
        self._caught_up_noted = True
        self.audit = HandoffAudit.start()
        """While leading: whether every command another replica handed over arrived (asked again otherwise)."""
        self.followers = 0
        self.caught_up_followers: set[str] = set()  # replica ids that answered this leader's snapshot marker
        self.recent_outcomes: collections.deque[tuple[float, CommandOutcome]] = collections.deque(
            maxlen=RECENT_OUTCOMES
        )
        self._last_prune = 0.0
        self._follow_subs: list[Subscription] = []
        self._follow_generation = 0
        self.retired: list[Subscription] = []
        self.journal_pub = node.create_publisher(CommandMsg, topics.shard_journal(site, sid), qos.EVENTS)
        # Submission records are rare and decide how a repeated request is answered: kept for late joiners (the
        # last few, transient local) so that a standby matched just after a submission still learns of it.
        submissions = topics.shard_submissions(site, sid)
        self.submission_pub = node.create_publisher(SubmissionRecordMsg, submissions, qos.OPERATIONS)
        node.create_subscription(SubmissionRecordMsg, submissions, self._on_submission, qos.OPERATIONS)
        self.handoff_pub = node.create_publisher(CommandMsg, topics.shard_handoff(site, sid), qos.EVENTS)
        node.create_subscription(CommandMsg, topics.shard_handoff(site, sid), self._on_handoff, qos.EVENTS)
        handed_outcomes = topics.shard_handoff_outcomes(site, sid)
        self.handoff_outcome_pub = node.create_publisher(CommandOutcomes, handed_outcomes, qos.EVENTS)
        node.create_subscription(CommandOutcomes, handed_outcomes, self._on_handed_outcomes, qos.EVENTS)
        self.follow()

    @property
    def _epoch(self) -> int:
        """The epoch this replica leads with (0 while standing by)."""
        dispatcher = self.leader.dispatcher
        return dispatcher.epoch if dispatcher is not None else 0

    # -- following and leading ---------------------------------------------------------------------------

    def follow(self) -> None:
        """Subscribe to the leader's journal and outcomes (the hot copy). Only while not leading: a leader that
        read its own streams would pay a second delivery for every command and outcome it publishes."""
        site, sid = self.site_id, self.shard_id
        self._follow_generation += 1
        generation = self._follow_generation

        # Retired subscriptions are destroyed a tick later; until then they may still deliver what this node
        # itself published while leading, which must not re-enter the hot copy (its outcomes were not followed).
        def on_journal(msg: CommandMsg) -> None:
            if generation == self._follow_generation:
                self._journal_entry(msg)

        def on_outcome(msg: CommandOutcomes) -> None:
            if generation == self._follow_generation:
                self._on_outcome(msg)

        self._follow_subs = [
            self.node.create_subscription(CommandMsg, topics.shard_journal(site, sid), on_journal, qos.EVENTS),
            self.node.create_subscription(CommandOutcomes, topics.shard_outcome(site, sid), on_outcome, qos.EVENTS),
        ]

    def stop_following(self) -> None:
        """This replica leads: its follow subscriptions are retired (destroyed at the next tick)."""
        self.retired += self._follow_subs
        self._follow_subs = []
        self._follow_generation += 1

    def lead(self, *, previous_epoch: int, led_epoch: int, now: float) -> None:
        """This replica took the lease: unknown request_ids wait for its predecessor's journal (CatchUp)."""
        # It followed the previous leader caught up (took its takeover's journal or its snapshot).
        followed = self.durable.caught_up and self.durable.gate.epoch >= previous_epoch
        self.catch_up = CatchUp.start(previous_epoch=previous_epoch, led_epoch=led_epoch, followed=followed, now=now)
        self._caught_up_noted = False
        self.audit = HandoffAudit.start()
        if not self.catch_up.done(now):
            self._log.info(
                f'unknown request_ids are answered "retry" until the journal of epoch {previous_epoch} is handed over '
                f'(at most {CATCH_UP_MAX_SEC:.0f}s)'
            )
        self.followers = self.handoff_pub.get_subscription_count()  # they get the adopted commands next
        self.caught_up_followers.clear()

    def caught_up(self, now: float) -> bool:
        """The catch-up ended: its end is noted durably once, so that this replica's own later hand-over vouches for
        the request records of this epoch."""
        if not self.catch_up.done(now):
            return False
        if not self._caught_up_noted and self._epoch:
            self._caught_up_noted = True
            try:
                self.journal.note_led(self._epoch)
            except JournalUnavailable as exc:
                self._log.error(f'end of catch-up not noted: {exc}')
        return True

    def reannounce(self, now: float, window: float) -> list[CommandOutcome]:
        """Outcomes followed (or journaled) within `window`: outcomes are facts, so repeating one is harmless
        (subscribers key them by command id); missing one is not."""
        recent = [msg for received, msg in self.recent_outcomes if received >= now - window]
        self.recent_outcomes.clear()
        # After a cold start (or an outcome this replica journaled as leader just before it died) the journal is
        # the only place such outcomes are left: those decided shortly before its newest are announced again.
        known = {msg.command_id for msg in recent}
        try:
            recent += [result_to_msg(r) for r in self.journal.recent_results(window) if r.command_id not in known]
        except JournalUnavailable as exc:
            self._log.error(f'recent outcomes not re-announced: {exc}')
        return recent

    # -- publishing --------------------------------------------------------------------------------------

    def replicate(self, commands: list[Command], records: list[SubmissionRecord]) -> None:
        """Accepted commands to the standbys (skipped while none follows) and request records. The journal topic is
        volatile: a standby that matches later gets a snapshot of the unfinished work on the handoff topic
        (snapshot_for_new_followers), so that it carries each accepted command once (recordings replay it as
        submissions)."""
        # The count goes with the lease (a standby that got fewer sees a gap), the last key with a snapshot marker.
        self.lease.note_journaled(len(commands), journal_entry_key(commands[-1]) if commands else '')
        if commands and self.journal_pub.get_subscription_count() > 0:
            for command in commands:
                self.journal_pub.publish(command_to_msg(command))
        for record in records:
            self.submission_pub.publish(_record_msg(record))

    def hand_over(self, commands: list[Command]) -> None:
        for command in commands:
            self.handoff_pub.publish(command_to_msg(command))

    def hand_over_outcomes(self) -> int:
        """The outcomes this replica's journal holds within retention, on the handed-outcomes topic: a replica that
        was down (or not started) when they were announced journals them, so that it can answer for them (GetOutcomes,
        a repeated request) if it leads later, and never adopts one of those commands again. Returns how many.
        Raises JournalUnavailable."""
        decided = [result_to_msg(r) for r in self.journal.recent_results(self._retention_sec())]
        for start in range(0, len(decided), OUTCOMES_PER_MESSAGE):
            self.handoff_outcome_pub.publish(CommandOutcomes(outcomes=decided[start : start + OUTCOMES_PER_MESSAGE]))
        return len(decided)

    def snapshot_for_new_followers(self) -> None:
        """A replica matched since the last tick (a standby started late, or restarted): send the outcomes decided
        within retention (it may have been down when they were announced: chaos seed 18), every unfinished command (on
        the handoff topic, with this leader's epoch: followers take it like a journal entry) and the recent request
        records again, so that its hot copy and journal hold what it missed. Followers that had them already keep
        their rows (entries are idempotent; the first outcome recorded wins). Raises JournalUnavailable."""
        followers = self.handoff_pub.get_subscription_count()
        joined, self.followers = followers > self.followers, followers
        dispatcher = self.leader.dispatcher
        if not joined or dispatcher is None:
            return
        decided = self.hand_over_outcomes()
        pending = dispatcher.pending()
        self.hand_over(pending)
        for record in self.journal.recent_requests():
            self.submission_pub.publish(_record_msg(record))
        # Every follower answers the marker again: one that restarted under the same id is counted only once it has.
        self.caught_up_followers.clear()
        self.send_snapshot_end()
        self._log.info(
            f'a follower joined: sent it {len(pending)} unfinished command(s) and {decided} decided outcome(s) of the '
            'journal'
        )

    def send_snapshot_end(self, epoch: int | None = None, kind: str = SNAPSHOT_END_KIND) -> None:
        """The end-of-snapshot marker on the handoff topic (after the entries it closes, same writer): sent by the
        leader in its epoch; answered by a follower that took it, under the follower's own id."""
        leading = self.leader.dispatcher is not None
        marker = CommandMsg(command_id='', agent_id=self.replica_id, epoch=self._epoch if epoch is None else epoch)
        marker.kind = kind
        marker.seq = self.lease.journaled if leading else 0  # the journal entries it covers, and the last one's key
        marker.trace_id = self.lease.last_journaled if leading else ''
        marker.site_id, marker.shard_id = self.site_id, self.shard_id
        self.handoff_pub.publish(marker)

    def keep_journal(self, now: float) -> bool:
        """A standby commits what it followed once per tick, answers a snapshot it took and hands its unfinished
        work to a new leader; old outcomes are pruned now and then. True when it handed its work over (its running
        mission goes next). Raises JournalUnavailable."""
        handed = False
        self.durable.persist(now)
        standing_by = self.leader.dispatcher is None
        if self.durable.answer_due and standing_by:
            self.send_snapshot_end(self.durable.answer_due)
            self._log.info(f'caught up with the leader of epoch {self.durable.answer_due}: eligible to lead')
            self.durable.answer_due = 0
        # Once someone besides us listens on both topics (the new leader's subscriptions may match a little after its
        # lease; the handed outcomes are volatile: published before the match, they would be lost).
        if (
            self.durable.handoff_due
            and standing_by
            and self.handoff_pub.get_subscription_count() > 1
            and self.handoff_outcome_pub.get_subscription_count() > 1
        ):
            commands, records = self.durable.handoff()
            # Decided outcomes first: the new leader may have adopted (from its own journal) a command this replica
            # saw decided, and must announce that outcome, never a second, different one (chaos seed 3).
            self.hand_over_outcomes()
            self.hand_over(commands)
            for record in records:
                self.submission_pub.publish(_record_msg(record))
            # After the records, same writer: the new leader holds them once it has this (CatchUp). It lists the
            # commands, which went on another (volatile) topic: the new leader asks again for any that did not arrive.
            end = SubmissionRecordMsg(
                request_id=HANDOFF_END,
                trace_id=self.replica_id,
                epoch=self.journal.led_epoch(),
                command_ids=[c.command_id for c in commands],
            )
            self.submission_pub.publish(end)
            if commands:
                self._log.info(f'handed {len(commands)} unfinished command(s) of the journal to the new leader')
            handed = True
        if now - self._last_prune >= PRUNE_EVERY_SEC:
            self._last_prune = now
            self.journal.prune(before=now - self._retention_sec())
        return handed

    def audit_handoffs(self, now: float) -> None:
        """While leading: a replica whose hand-over did not all arrive is asked to hand its journal over again."""
        dispatcher = self.leader.dispatcher
        if dispatcher is None:
            return
        for replica_id, missing, asked in self.audit.due(now, self.leader.holds):
            if asked == 1 or asked % LOG_REJECTED_EVERY == 0:
                self._log.warning(
                    f'{missing} command(s) {replica_id[:64]} handed over did not arrive: asking it to hand them over '
                    f'again ({asked} time(s) so far)'
                )
            marker = CommandMsg(command_id='', agent_id=replica_id, epoch=dispatcher.epoch, kind=HANDOFF_REQUEST_KIND)
            marker.site_id, marker.shard_id = self.site_id, self.shard_id
            self.handoff_pub.publish(marker)

    def ask_after_gap(self, now: float) -> None:
        """A standby that missed journal entries asks the leader for a snapshot (and is not caught up meanwhile)."""
        if reason := self.durable.check_gap(now):
            self._log.warning(f'{reason}: not caught up; asking the leader for a snapshot')
        if self.durable.snapshot_request_due(now):
            self.send_snapshot_end(self.durable.gate.epoch, kind=SNAPSHOT_REQUEST_KIND)

    # -- subscriptions -----------------------------------------------------------------------------------

    def on_journal(self, msg: CommandMsg) -> None:
        """One entry of the leader's journal topic (the hot copy)."""
        if self.leader.dispatcher is not None:
            return  # the leader's own journal: its dispatcher already holds these commands
        try:
            command = command_from_msg(msg)
        except ValueError:
            self._log.warning(f'undecodable journal entry {msg.command_id[:64]!r}')
            return
        if self.durable.on_journal_entry(command) is GateVerdict.REJECTED:
            self._untrusted('journal entry', msg.command_id, msg.epoch)

    def _on_submission(self, msg: SubmissionRecordMsg) -> None:
        """A record of the current leader (while following), or one handed over from an older epoch."""
        leading_epoch = self._epoch
        if msg.request_id == HANDOFF_END:
            if leading_epoch and msg.trace_id != self.replica_id:
                self.audit.on_end(msg.trace_id[:128], msg.command_ids, self.leader.clock())
            if leading_epoch and self.catch_up.on_handoff_end(msg.epoch):
                self._log.info(f'{msg.trace_id[:64]} handed over the journal of epoch {msg.epoch}: caught up')
            return
        if msg.epoch == leading_epoch:
            return  # our own
        record = SubmissionRecord(
            msg.request_id,
            msg.trace_id,
            tuple(msg.command_ids),
            tuple(msg.agent_ids),
            msg.epoch,
            from_time(msg.stamp),
        )
        if not leading_epoch and self.durable.on_entry(record) is not GateVerdict.REJECTED:
            return
        if self.durable.on_handoff(msg.epoch, leading_epoch=leading_epoch):
            try:
                self.durable.admit(record)
            except JournalUnavailable as exc:
                self._journal_failed(exc)
            return
        self._untrusted('submission record', msg.request_id, msg.epoch)

    def _untrusted(self, what: str, key: str, epoch: int) -> None:
        """Counted and logged, never applied: an entry not from the current lease holder's epoch."""
        self.untrusted_entries += 1
        if self.untrusted_entries % LOG_REJECTED_EVERY == 1:
            self._log.warning(
                f"ignored {what} {key[:64]!r} of epoch {epoch}: the lease holder's epoch is "
                f'{self.durable.gate.epoch} ({self.untrusted_entries} untrusted entries so far)'
            )

    def _on_handoff(self, msg: CommandMsg) -> None:
        leading_epoch = self._epoch
        if not msg.command_id and msg.kind == SNAPSHOT_END_KIND:
            self._on_snapshot_end(msg)
            return
        if not msg.command_id and msg.kind == SNAPSHOT_REQUEST_KIND:
            if leading_epoch and msg.epoch == leading_epoch:
                self.caught_up_followers.discard(msg.agent_id[:128])
                self.followers = 0  # answered at the next tick like a follower that joined
            return
        if not msg.command_id and msg.kind == HANDOFF_REQUEST_KIND:
            # The lease holder missed some of what this replica handed over: hand the journal over again (tick).
            if not leading_epoch and msg.agent_id == self.replica_id and msg.epoch >= self.durable.gate.epoch > 0:
                self.durable.handoff_due = True
            return
        if msg.epoch == (leading_epoch or -1):
            return  # our own hand-over, echoed
        if leading_epoch:
            self.audit.on_handed(msg.command_id)
        try:
            command = command_from_msg(msg)
        except ValueError:
            self._log.warning(f'undecodable handed-over command {msg.command_id[:64]!r}')
            return
        if not leading_epoch and command.epoch >= self.durable.gate.epoch:
            # The current leader's own work: its snapshot for a follower that joined, or another follower's
            # hand-over of what it followed. Taken like a journal entry (idempotent), and like one held until the
            # leader's lease is seen: a snapshot for a follower that just started overtakes the lease (another topic).
            if self.durable.on_entry(command) is GateVerdict.REJECTED:
                self._untrusted('handed-over command', msg.command_id, msg.epoch)
            return
        if not self.durable.on_handoff(command.epoch, leading_epoch=leading_epoch):
            self._untrusted('handed-over command', msg.command_id, msg.epoch)
            return
        if not leading_epoch:
            self.durable.admit(command)
            return
        self.leader.hand_over(command)  # adopted at the next tick, all of a hand-over at once

    def _on_snapshot_end(self, msg: CommandMsg) -> None:
        if msg.agent_id == self.replica_id:
            return  # our own marker, echoed
        if self._epoch:
            if msg.epoch == self._epoch:
                self.caught_up_followers.add(msg.agent_id[:128])
            return
        current = self.lease.current
        # Taken now, or held until the lease of its epoch arrives; answered (and logged) from the tick.
        self.durable.on_snapshot_end(
            msg.epoch,
            leader_id=msg.agent_id,
            current_leader=current.leader_id if current is not None else '',
            covered=msg.seq,
            last=msg.trace_id[:128],
        )

    def _on_handed_outcomes(self, batch: CommandOutcomes) -> None:
        """Outcomes another replica decided or followed, handed over with its work (or in the leader's snapshot for a
        follower that joined): at a leader, a command pending here that another replica already decided gets that
        outcome (the first decision wins; announced again, identically) and the others are journaled so that they are
        never adopted later; a follower journals them like outcomes it followed (it may have been down when they were
        announced, and must answer for them if it leads)."""
        results = [result for _msg, result in self._parsed(batch, 'handed-over outcome')]
        if self._epoch:
            self._apply(self.leader.settle(results))
            return
        self._follow_outcomes(results)

    def _on_outcome(self, batch: CommandOutcomes) -> None:
        if self._epoch:
            return  # the leader's own outcomes
        now = self.leader.clock()
        parsed = self._parsed(batch, 'outcome')
        self.recent_outcomes.extend((now, msg) for msg, _result in parsed)
        self._follow_outcomes([result for _msg, result in parsed])

    def _parsed(self, batch: CommandOutcomes, what: str) -> list[tuple[CommandOutcome, CommandResult]]:
        """The batch's outcomes with their results; one with an unknown value is logged and left out."""
        parsed = []
        for msg in batch.outcomes:
            try:
                parsed.append((msg, result_from_msg(msg)))
            except ValueError:
                self._log.warning(f'{what} {msg.command_id[:64]!r} with unknown value {msg.outcome}')
        return parsed

    def _follow_outcomes(self, results: list[CommandResult]) -> None:
        """A follower's outcomes (followed or handed over): in the hot copy and the journal."""
        self.leader.observe_outcomes(results)
        self.durable.on_outcomes(results)


def _record_msg(record: SubmissionRecord) -> SubmissionRecordMsg:
    return SubmissionRecordMsg(
        request_id=record.request_id,
        trace_id=record.trace_id,
        epoch=record.epoch,
        command_ids=list(record.command_ids),
        agent_ids=list(record.agent_ids),
        stamp=to_time(record.stamp),
    )
