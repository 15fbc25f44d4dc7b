"""ROS glue shared by fleetlanes nodes: named QoS profiles, message conversion and executor helpers."""
