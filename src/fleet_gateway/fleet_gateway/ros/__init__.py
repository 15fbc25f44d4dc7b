"""The ROS side's composition: applying protocol events to the rclpy endpoints."""
