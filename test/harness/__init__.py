"""Test harness shared by every fleetlanes test: waiting without sleeps, in-process ROS nodes, subprocesses."""

from harness.processes import ManagedProcess, start_process
from harness.wait import WaitTimeout, wait_for

__all__ = ['ManagedProcess', 'WaitTimeout', 'start_process', 'wait_for']
