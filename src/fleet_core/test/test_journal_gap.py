"""JournalGapDetector: a standby notices journal entries it missed while following (mid-run, not only at start)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fleet_core.shard_journal import JournalGapDetector

GRACE = 2.0


def synced(epoch: int = 100, received: int = 0) -> JournalGapDetector:
    gaps = JournalGapDetector(grace_sec=GRACE)
    for _ in range(received):
        gaps.on_entry(epoch)
    gaps.on_lease(epoch, received, now=0.0)
    assert gaps.synced
    return gaps


def test_a_stream_that_keeps_up_has_no_gap_even_when_leases_overtake_entries():
    gaps = synced()
    gaps.on_lease(100, 3, now=1.0)  # the lease overtook its three entries (another topic)
    assert gaps.check(1.5) == ''
    for _ in range(3):
        gaps.on_entry(100)
    assert gaps.check(10.0) == ''
    assert gaps.gaps == 0 and gaps.synced


def test_a_missed_entry_is_a_gap_once_the_grace_passed():
    gaps = synced()
    gaps.on_entry(100)
    gaps.on_entry(100)  # the third entry is lost
    gaps.on_lease(100, 3, now=1.0)
    assert gaps.check(1.0 + GRACE - 0.1) == ''
    reason = gaps.check(1.0 + GRACE)
    assert 'gap in epoch 100' in reason and '3 entries' in reason and 'only 2 arrived' in reason
    assert gaps.gaps == 1 and not gaps.synced
    assert gaps.check(100.0) == ''  # reported once: unsynced until the next snapshot


def test_a_silent_stream_while_the_leader_writes_on_is_a_gap():
    gaps = synced(received=5)
    for t in range(1, 12):
        gaps.on_lease(100, 5 + t, now=float(t))  # the leader keeps journaling; nothing arrives
    assert gaps.check(1.0 + GRACE) != ''


def test_a_snapshot_marker_resyncs_with_the_count_it_covers():
    gaps = synced()
    gaps.on_lease(100, 4, now=1.0)
    assert gaps.check(1.0 + GRACE) != ''
    gaps.on_snapshot(100, covered=4)
    assert gaps.synced and gaps.received() == 4
    gaps.on_lease(100, 4, now=5.0)
    gaps.on_entry(100)
    gaps.on_lease(100, 5, now=5.5)
    assert gaps.check(20.0) == ''
    gaps.on_lease(100, 6, now=21.0)
    assert gaps.check(21.0 + GRACE) != ''  # and it judges again after the snapshot
    assert gaps.gaps == 2


def test_a_late_joiner_is_judged_only_from_its_snapshot():
    gaps = JournalGapDetector(grace_sec=GRACE)
    gaps.on_lease(100, 40, now=0.0)  # the leader journaled 40 entries before this standby subscribed
    assert not gaps.synced
    assert gaps.check(100.0) == ''
    gaps.on_snapshot(100, covered=40)
    gaps.on_lease(100, 40, now=101.0)
    assert gaps.check(200.0) == ''


def test_a_new_epoch_counts_from_its_takeover_lease_and_entries_held_before_it():
    gaps = synced(received=7)
    gaps.on_entry(101)  # the new leader's first entry overtook its lease
    gaps.on_lease(101, 0, now=1.0)  # the takeover lease: nothing journaled yet when it was published
    assert gaps.synced and gaps.epoch == 101 and gaps.received() == 1
    gaps.on_lease(101, 1, now=1.2)
    gaps.on_entry(100)  # a fenced leader's late entry is not counted for the new epoch
    gaps.on_lease(101, 2, now=1.4)
    assert gaps.check(1.4 + GRACE) != ''


def test_an_old_epochs_lease_changes_nothing():
    gaps = synced(epoch=101)
    gaps.on_lease(100, 50, now=1.0)
    assert gaps.check(100.0) == '' and gaps.epoch == 101


@given(
    entries=st.integers(min_value=1, max_value=60),
    lost=st.sets(st.integers(min_value=0, max_value=59)),
    lease_every=st.integers(min_value=1, max_value=10),
)
def test_any_lost_entry_is_found_and_none_is_invented(entries, lost, lease_every):
    """The leader journals `entries` and renews after every `lease_every`; the entries in `lost` never arrive, the
    others arrive right after the lease that counts them (leases overtake entries)."""
    lost = {i for i in lost if i < entries}
    gaps = JournalGapDetector(grace_sec=GRACE)
    gaps.on_lease(100, 0, now=0.0)
    now = 0.0
    found = ''
    for i in range(entries):
        if i % lease_every == 0 or i == entries - 1:
            now += 0.25
            gaps.on_lease(100, i + 1, now=now)
        if i not in lost:
            gaps.on_entry(100)
        found = found or gaps.check(now)
    now += 0.25
    gaps.on_lease(100, entries, now=now)
    found = found or gaps.check(now + GRACE)
    assert bool(found) == bool(lost)


def key(i: int) -> str:
    return f'c{i}/1/1'


def test_entries_journaled_after_a_marker_that_arrive_before_it_are_counted():
    """Chaos seed 6: the marker (handoff topic) was overtaken by an entry journaled after it (journal topic). That
    entry was lost from the count, a false gap made the standby not caught up, and the takeover took 4 s."""
    gaps = JournalGapDetector(grace_sec=GRACE)
    gaps.on_lease(100, 3, now=0.0)  # three entries before this standby subscribed
    gaps.on_entry(100, key(3))  # the fourth reached it; the marker covers four
    gaps.on_entry(100, key(4))  # journaled after the marker, arrived before it
    gaps.on_snapshot(100, covered=4, last=key(3))
    assert gaps.received() == 5
    gaps.on_lease(100, 5, now=1.0)
    assert gaps.check(1.0 + GRACE) == ''


def test_a_late_joiner_whose_covered_entries_all_came_before_it_counts_what_arrived_on_top():
    gaps = JournalGapDetector(grace_sec=GRACE)
    gaps.on_lease(100, 3, now=0.0)
    gaps.on_entry(100, key(3))  # journaled after the marker (which covers 0-2), arrived before it
    gaps.on_snapshot(100, covered=3, last=key(2))  # key(2) was published before this standby subscribed
    gaps.on_lease(100, 4, now=1.0)
    assert gaps.check(1.0 + GRACE) == ''


def test_a_followers_marker_that_overtakes_its_last_entry_counts_from_that_entry():
    gaps = synced(received=2)
    gaps.on_lease(100, 2, now=0.5)
    gaps.on_snapshot(100, covered=4, last=key(3))  # entries 2 and 3 still on their way
    gaps.on_entry(100, key(2))
    gaps.on_entry(100, key(3))
    assert gaps.received() == 4
    gaps.on_entry(100, key(5))  # entry 4 is lost
    gaps.on_lease(100, 6, now=1.0)
    assert 'only 5 arrived' in gaps.check(1.0 + GRACE)


def test_a_follower_that_lost_the_markers_last_entry_still_finds_a_later_gap():
    gaps = synced(received=2)  # entries 0 and 1 arrived; 2 and 3 are lost (a reader that fell behind)
    gaps.on_snapshot(100, covered=4, last=key(3))
    gaps.on_entry(100, key(4))
    gaps.on_entry(100, key(6))  # entry 5 is lost
    gaps.on_lease(100, 7, now=1.0)
    assert 'only 6 arrived' in gaps.check(1.0 + GRACE)


@given(
    entries=st.integers(min_value=1, max_value=40),
    data=st.data(),
)
def test_a_marker_anywhere_in_the_stream_leaves_an_exact_count(entries, data):
    """The leader journals `entries`, sends a marker after the first `covered`; the standby subscribed from entry
    `joined` and loses some entries (never the marker's last one). The marker arrives anywhere among the entries.
    A gap is found exactly when an entry journaled after the marker does not arrive."""
    covered = data.draw(st.integers(min_value=1, max_value=entries))
    joined = data.draw(st.integers(min_value=0, max_value=entries))
    lost = data.draw(st.sets(st.integers(min_value=joined, max_value=max(joined, entries - 1))))
    lost = {i for i in lost if i < entries and i != covered - 1}
    arrivals = [i for i in range(joined, entries) if i not in lost]
    at = data.draw(st.integers(min_value=0, max_value=len(arrivals)))
    gaps = JournalGapDetector(grace_sec=GRACE)
    gaps.on_lease(100, joined, now=0.0)
    for position, i in enumerate([*arrivals, None]):
        if position == at:
            gaps.on_snapshot(100, covered=covered, last=key(covered - 1))
        if i is not None:
            gaps.on_entry(100, key(i))
    gaps.on_lease(100, entries, now=1.0)
    found = gaps.check(1.0 + GRACE)
    # entries journaled after the marker and before this standby subscribed never reach it either
    assert bool(found) == (any(i >= covered for i in lost) or joined > covered), (found, gaps.received())
