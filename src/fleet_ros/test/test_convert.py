from hypothesis import given
from hypothesis import strategies as st

from fleet_core.model import Ack, AckStatus, Command, Priority
from fleet_ros.convert import ack_from_msg, ack_to_msg, command_from_msg, command_to_msg, from_time, to_time


@given(st.floats(min_value=0, max_value=2**31 - 2, allow_nan=False))
def test_time_round_trip_within_a_nanosecond(seconds):
    assert abs(from_time(to_time(seconds)) - seconds) <= 1e-6 * max(1.0, seconds / 1e3)


def test_command_and_ack_round_trip():
    command = Command('c', 't', 's', 'z', 'a', 7, 3, Priority.HIGH, 100.25, 130.5, 'goto', '{"x":1,"y":2}', 2)
    assert command_from_msg(command_to_msg(command)) == command
    ack = Ack.for_command(command, AckStatus.REJECTED_EXPIRED, 'late', 131.0)
    back = ack_from_msg(ack_to_msg(ack))
    assert back == ack and ack_to_msg(ack).final
