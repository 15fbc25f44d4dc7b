"""fleetlanes pure core: the decisions of the command protocol, routing and workflows, free of any ROS import."""
