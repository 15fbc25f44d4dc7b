"""The in-flight window: it follows what a client reads, and a burst of quick pongs does not inflate it."""

from __future__ import annotations

from fleet_gateway.transport.window import MIN_WINDOW, PIPE_TARGET_S, InFlightWindow

FRAME = 150
RATE = 200 * FRAME  # a 200 Hz telemetry topic: 30 kB/s


def _steady(window: InFlightWindow, seconds: float, start: float = 0.0, written: int = 0) -> tuple[float, int]:
    """A client that keeps up with RATE: a ping every quarter window, answered 1 ms later."""
    now = start
    while now < start + seconds:
        step = max(window.window // 4, FRAME) / RATE
        now += step
        written += int(step * RATE)
        window.answered(written, now, now + 0.001)
    return now, written


def test_the_window_follows_the_read_rate_of_a_client_that_keeps_up() -> None:
    window = InFlightWindow()
    _steady(window, 5.0)
    assert abs(window.read_rate - RATE) < 0.1 * RATE, window.read_rate
    assert MIN_WINDOW <= window.window <= 2.2 * RATE * PIPE_TARGET_S, window.window


def test_a_burst_of_quick_pongs_after_a_stall_does_not_inflate_the_window() -> None:
    """After a 1 s stall, the second's 30 kB go out in window-sized writes answered within milliseconds. Read as a
    rate per pong interval that is megabytes per second, and a window that would hold seconds of telemetry for a
    client that then stops reading."""
    window = InFlightWindow()
    now, written = _steady(window, 3.0)
    before = window.window
    now += 1.0  # the stall
    backlog = RATE
    while backlog > 0:
        chunk = min(window.room(written) or window.window, backlog)
        written += chunk
        backlog -= chunk
        window.answered(written, now, now + 0.002)
        now += 0.003
    assert window.window <= max(before, 2.2 * RATE * PIPE_TARGET_S), (before, window.window)
    assert window.read_rate < 2 * RATE, window.read_rate


def test_a_client_with_a_slow_answer_gets_what_it_reads_in_the_pipe_target() -> None:
    window = InFlightWindow()
    now, written = _steady(window, 3.0)
    rate = window.read_rate
    written += 8 * 1024
    window.answered(written, now, now + 1.5)  # data piled up: a pong 1.5 s late
    assert window.window == max(MIN_WINDOW, int(window.read_rate * PIPE_TARGET_S)), (window.window, rate)
    assert window.window < 2 * rate * PIPE_TARGET_S


def test_no_room_beyond_the_window() -> None:
    window = InFlightWindow()
    assert window.room(0) == MIN_WINDOW
    assert window.room(MIN_WINDOW + 100) == 0
    window.answered(MIN_WINDOW, 0.0, 0.001)
    assert window.room(MIN_WINDOW + 100) == MIN_WINDOW - 100
