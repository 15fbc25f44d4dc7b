"""A kinematic differential-drive base: velocity commands in, pose out, no dynamics. Pure (no ROS): the
`fleet_diff_drive_sim` node feeds it cmd_vel and publishes its odometry."""

from __future__ import annotations

import math
from dataclasses import dataclass


class KinematicsError(ValueError):
    """Limits a base cannot have (not above zero, or not finite)."""


@dataclass(frozen=True, slots=True)
class BaseState:
    x: float
    y: float
    yaw: float
    linear: float
    angular: float


class KinematicDiffDrive:
    """Follows the latest velocity command, clamped to the limits, exactly along its arc. A command older than
    `cmd_timeout_sec` counts as zero (as diff-drive controllers do), so a silent commander cannot run the base away;
    0 disables the timeout."""

    def __init__(
        self,
        *,
        x: float = 0.0,
        y: float = 0.0,
        yaw: float = 0.0,
        max_linear_mps: float = 1.0,
        max_angular_rps: float = 2.0,
        cmd_timeout_sec: float = 0.5,
        now: float = 0.0,
    ) -> None:
        for name, value in (('max_linear_mps', max_linear_mps), ('max_angular_rps', max_angular_rps)):
            if not value > 0 or not math.isfinite(value):
                raise KinematicsError(f'{name} must be a finite number above 0, got {value!r}')
        if not cmd_timeout_sec >= 0:
            raise KinematicsError(f'cmd_timeout_sec must be >= 0, got {cmd_timeout_sec!r}')
        self.x, self.y, self.yaw = x, y, yaw
        self.max_linear_mps = max_linear_mps
        self.max_angular_rps = max_angular_rps
        self.cmd_timeout_sec = cmd_timeout_sec
        self._linear = 0.0
        self._angular = 0.0
        self._commanded_at = -math.inf
        self._stepped_at = now

    def command(self, linear: float, angular: float, now: float) -> None:
        """A new velocity command (non-finite values stop the base)."""
        self.step(now)
        if not (math.isfinite(linear) and math.isfinite(angular)):
            linear = angular = 0.0
        self._linear = max(-self.max_linear_mps, min(self.max_linear_mps, linear))
        self._angular = max(-self.max_angular_rps, min(self.max_angular_rps, angular))
        self._commanded_at = now

    def _velocity_at(self, t: float) -> tuple[float, float]:
        if self.cmd_timeout_sec > 0 and t - self._commanded_at > self.cmd_timeout_sec:
            return 0.0, 0.0
        return self._linear, self._angular

    def step(self, now: float) -> BaseState:
        """Advance to `now` and return the state there."""
        start = self._stepped_at
        if now > start:
            # The command may time out inside this interval: move only until then.
            end = now
            if self.cmd_timeout_sec > 0:
                end = min(now, max(start, self._commanded_at + self.cmd_timeout_sec))
            linear, angular = self._velocity_at(start)
            self._advance(linear, angular, end - start)
            self._stepped_at = now
        linear, angular = self._velocity_at(now)
        return BaseState(self.x, self.y, self.yaw, linear, angular)

    def _advance(self, linear: float, angular: float, dt: float) -> None:
        if dt <= 0 or (linear == 0.0 and angular == 0.0):
            return
        yaw = self.yaw
        if abs(angular) < 1e-9:
            self.x += linear * dt * math.cos(yaw)
            self.y += linear * dt * math.sin(yaw)
        else:
            radius = linear / angular
            self.x += radius * (math.sin(yaw + angular * dt) - math.sin(yaw))
            self.y -= radius * (math.cos(yaw + angular * dt) - math.cos(yaw))
        self.yaw = (yaw + angular * dt + math.pi) % (2 * math.pi) - math.pi
