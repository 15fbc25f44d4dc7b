"""Test harness shared by every fleetlanes test: waiting without sleeps, in-process ROS nodes, subprocesses."""

from harness.processes import ManagedProcess, ProcessGroup
from harness.wait import WaitTimeout, wait_for

__all__ = ['ManagedProcess', 'ProcessGroup', 'WaitTimeout', 'wait_for']
