"""The ROS side now lives in `fleet_gateway.ros` (topics, service clients, served services, action goals, served
actions; `ros.endpoints` composes them). These names stay importable from here for the console script."""

from fleet_gateway.ros.endpoints import EndpointsFactory, RosEndpoints
from fleet_gateway.ros.graph import EndpointConflict
from fleet_gateway.ros.topics import OnMessages

__all__ = ['EndpointConflict', 'EndpointsFactory', 'OnMessages', 'RosEndpoints']
