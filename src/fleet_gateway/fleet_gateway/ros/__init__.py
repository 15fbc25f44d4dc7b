"""The ROS side of the gateway: one node's topics, service clients, served services, action goals and served actions
(`endpoints.RosEndpoints` composes them) and the table that applies the sessions' events to them (`dispatch`)."""
