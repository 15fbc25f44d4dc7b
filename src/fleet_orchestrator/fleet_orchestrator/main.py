"""`shard_orchestrator` entry point: one ShardOrchestrator lifecycle node, spun on the main thread.

SIGINT/SIGTERM stop it in order (fleet_ros.runtime): the signal only asks the spin loop to stop; the node's shutdown
transition then steps it down (announces decided outcomes, hands unfinished work over, closes its journal) while its
context is still valid, and only then is the context shut down. (rclpy's own handler would invalidate the context
under a running timer callback, which then fails publishing.)"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rclpy.lifecycle import TransitionCallbackReturn

from fleet_orchestrator.node import ShardOrchestrator
from fleet_ros.params import declare
from fleet_ros.runtime import EXIT_STARTUP, RosProgram, run_program


def main(argv: Sequence[str] | None = None) -> int:
    return run_program('shard_orchestrator', _run, args=list(argv) if argv is not None else None)


def _run(program: RosProgram) -> int | None:
    node = program.add_node(ShardOrchestrator('orchestrator', context=program.context))
    autostart = declare(
        node, 'autostart', True, 'configure and activate at start (false: wait for a lifecycle manager)', read_only=True
    )
    if autostart:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            node.get_logger().fatal('configure failed; exiting')
            return EXIT_STARTUP
        node.trigger_activate()
    program.spin()
    if program.stop_requested:
        node.get_logger().info(f'{program.stop_reason}: stepping down and closing the journal')
    return None


if __name__ == '__main__':
    sys.exit(main())
