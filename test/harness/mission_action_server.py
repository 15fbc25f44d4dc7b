"""A stand-in fleet_interfaces/RunMission action server for the gateway's action tests, run as its own process:
`python mission_action_server.py <action name> [<action name> ...]`. Prints READY once every server is up.

The goal's `workflow` picks the behaviour: "reject" is refused; "abort" runs one point, then aborts; "slow" takes
0.5 s per point; anything else 0.05 s per point. Each point is one feedback message; a cancel request is
accepted and ends the goal (status CANCELED) before its next point, with a line "CANCELED <mission_id>"."""

from __future__ import annotations

import sys
import threading

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from fleet_interfaces.action import RunMission


class MissionStandIn(Node):
    def __init__(self, actions: list[str]) -> None:
        super().__init__('mission_action_stand_in')
        group = ReentrantCallbackGroup()
        self.servers = [
            ActionServer(
                self,
                RunMission,
                name,
                execute_callback=self.execute,
                goal_callback=self.on_goal,
                cancel_callback=lambda _handle: CancelResponse.ACCEPT,
                callback_group=group,
            )
            for name in actions
        ]

    def on_goal(self, goal: RunMission.Goal) -> GoalResponse:
        return GoalResponse.REJECT if goal.workflow == 'reject' else GoalResponse.ACCEPT

    def execute(self, goal_handle) -> RunMission.Result:  # a worker thread of the executor
        goal = goal_handle.request
        total = len(goal.point_ids)
        step_s = 0.5 if goal.workflow == 'slow' else 0.05
        paced = threading.Event()  # never set: waits pace the mission, and a cancel is seen within one step
        for done in range(total):
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                print(f'CANCELED {goal.mission_id}', flush=True)
                return RunMission.Result(points_done=done, points_total=total, detail='cancelled by the client')
            if goal.workflow == 'abort' and done == 1:
                goal_handle.abort()
                return RunMission.Result(points_done=done, points_total=total, detail='aborted on purpose')
            goal_handle.publish_feedback(
                RunMission.Feedback(points_done=done + 1, points_total=total, agents_active=1, state='RUNNING')
            )
            paced.wait(step_s)
        goal_handle.succeed()
        return RunMission.Result(success=True, points_done=total, points_total=total, detail=f'{goal.mission_id} done')


def main() -> None:
    rclpy.init()
    node = MissionStandIn(sys.argv[1:])
    # MultiThreadedExecutor, not EventsExecutor: execute callbacks block (one per goal) while cancel requests and
    # further goals must still be handled.
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    print('READY', flush=True)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
