"""fleetlanes bring-up: the node sets of a deployment (`nodes`), their ROS 2 launch actions (`launch_actions`) and the
process supervisor of `fleetctl up` (`processes`); the package's share/ holds launch/ and config/, so
`ros2 launch fleet_bringup site_launch.py` works. It depends on no simulator code: a robot computer installs the
agent and this package only."""
