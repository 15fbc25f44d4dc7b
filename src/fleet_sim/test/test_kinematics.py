"""KinematicDiffDrive, the pure base of the fleet_diff_drive_sim stand-in: clamping, arcs, command timeout."""

from __future__ import annotations

import math

import pytest

from fleet_sim.kinematics import KinematicDiffDrive, KinematicsError


def test_kinematic_base_follows_arcs_clamps_and_times_out():
    base = KinematicDiffDrive(max_linear_mps=1.0, max_angular_rps=2.0, cmd_timeout_sec=0.5, now=0.0)
    base.command(5.0, 0.0, 0.0)  # clamped to 1 m/s
    state = base.step(0.25)
    assert (state.x, state.y, state.linear) == (pytest.approx(0.25), pytest.approx(0.0), 1.0)
    state = base.step(2.0)  # the command timed out at 0.5 s
    assert state.x == pytest.approx(0.5) and state.linear == 0.0
    base.command(float('nan'), 1.0, 2.0)
    assert base.step(2.2).angular == 0.0
    arc = KinematicDiffDrive(x=0.5, max_linear_mps=2.0, max_angular_rps=2.0, cmd_timeout_sec=0.0, now=0.0)
    arc.command(math.pi / 2, math.pi / 2, 0.0)  # a quarter circle of radius 1 in one second
    arc.step(0.3)
    state = arc.step(1.0)  # two steps land where one would
    assert (state.x, state.y, state.yaw) == (pytest.approx(1.5), pytest.approx(1.0), pytest.approx(math.pi / 2))
    with pytest.raises(KinematicsError):
        KinematicDiffDrive(max_linear_mps=-1.0)
