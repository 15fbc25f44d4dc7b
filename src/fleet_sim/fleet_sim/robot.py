"""A simulated robot base: pose interpolated along straight segments at a set speed, dock state and battery.
Pure: time is passed in, so the same model drives the executor, odometry and tests."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class _Segment:
    x0: float
    y0: float
    x1: float
    y1: float
    t0: float
    t1: float


class SimRobot:
    """Pose, heading, velocity, dock state and battery of one robot, as functions of time."""

    def __init__(
        self,
        agent_id: str,
        home: tuple[float, float],
        *,
        battery_pct: float = 100.0,
        drain_per_m: float = 0.05,
        drain_per_sec: float = 0.02,
        charge_per_sec: float = 1.0,
    ) -> None:
        self.agent_id = agent_id
        self.home = home
        self.docked = True
        self.heading = 0.0
        self._battery = battery_pct
        self._battery_at = 0.0
        self.drain_per_m = drain_per_m
        self.drain_per_sec = drain_per_sec
        self.charge_per_sec = charge_per_sec
        self._seg = _Segment(home[0], home[1], home[0], home[1], 0.0, 0.0)
        self.odometer_m = 0.0

    # -- motion ------------------------------------------------------------------------------------------

    def pose(self, now: float) -> tuple[float, float, float]:
        s = self._seg
        if now >= s.t1 or s.t1 <= s.t0:
            return s.x1, s.y1, self.heading
        f = max(0.0, (now - s.t0) / (s.t1 - s.t0))
        return s.x0 + (s.x1 - s.x0) * f, s.y0 + (s.y1 - s.y0) * f, self.heading

    def velocity(self, now: float) -> tuple[float, float]:
        s = self._seg
        if not s.t0 <= now < s.t1:
            return 0.0, 0.0
        dt = s.t1 - s.t0
        return (s.x1 - s.x0) / dt, (s.y1 - s.y0) / dt

    def start_motion(self, x: float, y: float, speed_mps: float, now: float) -> float:
        """Begin driving to (x, y); returns the travel time in seconds."""
        px, py, _ = self.pose(now)
        distance = math.hypot(x - px, y - py)
        duration = distance / speed_mps if speed_mps > 0 else 0.0
        if distance > 1e-9:
            self.heading = math.atan2(y - py, x - px)
        self._seg = _Segment(px, py, x, y, now, now + duration)
        return duration

    def halt(self, now: float) -> None:
        """Stop where the robot is now (cancelled motion)."""
        px, py, _ = self.pose(now)
        self._account_distance(now)
        self._seg = _Segment(px, py, px, py, now, now)

    def arrive(self, now: float) -> None:
        self._account_distance(now)

    def _account_distance(self, now: float) -> None:
        s = self._seg
        px, py, _ = self.pose(now)
        driven = math.hypot(px - s.x0, py - s.y0)
        self.odometer_m += driven
        self._battery = max(0.0, self._battery - driven * self.drain_per_m)

    # -- dock and battery --------------------------------------------------------------------------------

    def battery(self, now: float) -> float:
        elapsed = max(0.0, now - self._battery_at) if self._battery_at else 0.0
        if self.docked:
            return min(100.0, self._battery + elapsed * self.charge_per_sec)
        return max(0.0, self._battery - elapsed * self.drain_per_sec)

    def _settle_battery(self, now: float) -> None:
        self._battery = self.battery(now)
        self._battery_at = now

    def set_docked(self, docked: bool, now: float) -> None:
        self._settle_battery(now)
        self.docked = docked
