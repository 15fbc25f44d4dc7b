"""The go-to steering law of a differential-drive base: turn toward the target, drive while roughly facing it,
slow down on approach. Pure (no ROS): the motion backend feeds it odometry poses and publishes its twists."""

from __future__ import annotations

import math
from dataclasses import dataclass

Pose = tuple[float, float, float]
"""(x, y, yaw) in the odometry frame, metres and radians."""


class SteeringError(ValueError):
    """Steering limits that cannot drive a robot (a limit or gain not above zero)."""


@dataclass(frozen=True, slots=True)
class SteeringLimits:
    """Speed limits and gains of the law. Above `rotate_in_place_rad` of heading error the base turns on the spot
    (a diff-drive base driving forward while facing away would spiral); below it the forward speed is scaled by
    the cosine of the error."""

    max_linear_mps: float = 0.5
    max_angular_rps: float = 1.0
    linear_gain: float = 1.0
    angular_gain: float = 2.0
    rotate_in_place_rad: float = 0.5

    def __post_init__(self) -> None:
        for name in ('max_linear_mps', 'max_angular_rps', 'linear_gain', 'angular_gain', 'rotate_in_place_rad'):
            value = getattr(self, name)
            if not value > 0 or not math.isfinite(value):
                raise SteeringError(f'{name} must be a finite number above 0, got {value!r}')


def wrap_angle(angle: float) -> float:
    """The same angle in [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


def yaw_of_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Rotation about z of a unit quaternion (the heading in an Odometry pose)."""
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def distance(pose: Pose, x: float, y: float) -> float:
    return math.hypot(x - pose[0], y - pose[1])


def _clamp(value: float, limit: float) -> float:
    return max(-limit, min(limit, value))


def turn_toward(pose: Pose, heading: float, limits: SteeringLimits) -> tuple[float, float]:
    """(linear, angular) turning on the spot toward `heading`."""
    return 0.0, _clamp(limits.angular_gain * wrap_angle(heading - pose[2]), limits.max_angular_rps)


def steer(pose: Pose, x: float, y: float, limits: SteeringLimits) -> tuple[float, float]:
    """(linear m/s, angular rad/s) moving a base at `pose` toward (x, y)."""
    error = wrap_angle(math.atan2(y - pose[1], x - pose[0]) - pose[2])
    angular = _clamp(limits.angular_gain * error, limits.max_angular_rps)
    if abs(error) > limits.rotate_in_place_rad:
        return 0.0, angular
    linear = min(limits.max_linear_mps, limits.linear_gain * distance(pose, x, y)) * math.cos(error)
    return linear, angular
