"""`fleet_sim_fault`: send one fault request to the simulator hosts.

Example: `fleet_sim_fault cut --host site_a_zone_1 --duration 5`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from rclpy.duration import Duration
from std_msgs.msg import String

from fleet_observability.session import ros_session
from fleet_ros import qos
from fleet_sim.faults import FAULT_TOPIC, OPS, Fault, FaultError, parse_fault


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='fleet_sim_fault', description='Inject a fault into simulated robots.')
    parser.add_argument('op', choices=OPS, help='cut | restore | slow | skew | clear')
    parser.add_argument('--host', default='', help='host name (fleet_sim_host host_name), or * for every host')
    parser.add_argument('--agent', action='append', dest='agents', default=[], help='agent id (repeatable)')
    parser.add_argument('--duration', type=float, default=0.0, help='cut: seconds until the link comes back')
    parser.add_argument('--factor', type=float, default=1.0, help='slow: execution time multiplier')
    parser.add_argument('--offset', type=float, default=0.0, help='skew: clock offset in seconds')
    parser.add_argument('--wait', type=float, default=3.0, help='seconds to wait for simulator hosts to listen')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fault = Fault(args.op, args.host, tuple(args.agents), args.duration, args.factor, args.offset)
    try:
        parse_fault(fault.to_json())
    except FaultError as exc:
        print(f'fleet_sim_fault: error: {exc}', file=sys.stderr)
        return 2
    with ros_session('fleet_sim_fault') as session:
        pub = session.node.create_publisher(String, FAULT_TOPIC, qos.EVENTS)
        found = session.spin_until(time.monotonic() + args.wait, lambda: pub.get_subscription_count() > 0)
        if not found:
            print(f'fleet_sim_fault: error: no simulator host listens on {FAULT_TOPIC}', file=sys.stderr)
            return 1
        pub.publish(String(data=fault.to_json()))
        # Reliable delivery needs the writer alive until the readers have it.
        pub.wait_for_all_acked(timeout=Duration(seconds=2.0))
        listeners = pub.get_subscription_count()
    print(f'sent {fault.op} to {listeners} simulator host(s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
