"""`shard_orchestrator` entry point: one ShardOrchestrator lifecycle node, spun on the main thread.

SIGINT/SIGTERM stop it in order: the signal only sets a flag; the loop then leaves the executor between callbacks,
the node steps down (announces decided outcomes, hands unfinished work over, closes its journal) while its context
is still valid, and only then is rclpy shut down. (rclpy's own handler would invalidate the context under a running
timer callback, which then fails publishing.)"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.experimental import EventsExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

from fleet_orchestrator.node import ShardOrchestrator
from fleet_ros.params import declare
from fleet_ros.spin import SPIN_SLICE_SEC


def main(argv: Sequence[str] | None = None) -> int:
    rclpy.init(args=list(argv) if argv is not None else None, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    node = ShardOrchestrator('orchestrator')
    autostart = declare(
        node, 'autostart', True, 'configure and activate at start (false: wait for a lifecycle manager)', read_only=True
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
        while rclpy.ok() and not stop.is_set():
            executor.spin_once(timeout_sec=SPIN_SLICE_SEC)
        if stop.is_set() and rclpy.ok():
            node.get_logger().info('signal received: stepping down and closing the journal')
            node.trigger_shutdown()
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
