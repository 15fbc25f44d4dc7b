"""`shard_orchestrator` entry point: one ShardOrchestrator lifecycle node, spun on the main thread."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.experimental import EventsExecutor
from rclpy.lifecycle import TransitionCallbackReturn

from fleet_orchestrator.node import ShardOrchestrator
from fleet_ros.params import declare
from fleet_ros.spin import SPIN_SLICE_SEC


def main(argv: Sequence[str] | None = None) -> int:
    rclpy.init(args=argv)
    node = ShardOrchestrator('orchestrator')
    autostart = declare(
        node, 'autostart', True, 'configure and activate at start (false: wait for a lifecycle manager)'
    )
    executor = EventsExecutor()
    executor.add_node(node)
    code = 0
    try:
        if autostart:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal('configure failed; exiting')
                return 2
            node.trigger_activate()
        # spin() misses entities created after add_node (they appear at configure); spin_once re-collects.
        while rclpy.ok():
            executor.spin_once(timeout_sec=SPIN_SLICE_SEC)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
