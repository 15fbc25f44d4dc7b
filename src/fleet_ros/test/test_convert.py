import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from fleet_core.model import Ack, AckStatus, Command, Priority
from fleet_ros.convert import ack_from_msg, ack_to_msg, command_from_msg, command_to_msg, from_time, to_time

SECONDS = st.floats(min_value=0, max_value=2**31 - 2, allow_nan=False)


@given(SECONDS)
def test_time_is_exact_within_a_nanosecond(seconds: float) -> None:
    stamp = to_time(seconds)
    assert 0 <= stamp.nanosec < 1_000_000_000
    exact_ns = Fraction(seconds) * 1_000_000_000
    assert abs(stamp.sec * 1_000_000_000 + stamp.nanosec - exact_ns) <= Fraction(1, 2)


@given(SECONDS)
def test_time_round_trip_within_float_resolution(seconds: float) -> None:
    # A float cannot hold present-day UTC to the nanosecond (its step is ~0.24 us there): one step is the bound.
    assert abs(from_time(to_time(seconds)) - seconds) <= max(math.ulp(seconds), 1e-9)


def test_time_clamps_outside_the_message_range() -> None:
    assert (to_time(-5.0).sec, to_time(-5.0).nanosec) == (0, 0)
    assert to_time(2.0**40).sec == 2**31 - 1
    assert (to_time(1.9999999999).sec, to_time(1.9999999999).nanosec) == (2, 0)  # the fraction rounds up


def test_command_and_ack_round_trip() -> None:
    command = Command('c', 't', 's', 'z', 'a', 7, 3, Priority.HIGH, 100.25, 130.5, 'goto', '{"x":1,"y":2}', 2)
    assert command_from_msg(command_to_msg(command)) == command
    ack = Ack.for_command(command, AckStatus.REJECTED_EXPIRED, 'late', 131.0)
    back = ack_from_msg(ack_to_msg(ack))
    assert back == ack and ack_to_msg(ack).final
