"""The sans-I/O rosbridge v2 protocol core: text in, events for the ROS side and frames to send out."""

from fleet_gateway.protocol.events import (
    AdvertiseAction,
    AdvertiseService,
    AdvertiseTopic,
    CallService,
    CancelActionGoal,
    CloseConnection,
    Event,
    PublishMessage,
    SendActionGoal,
    ServedGoalFeedback,
    ServedGoalResult,
    ServiceReply,
    SubscribeTopic,
    UnadvertiseAction,
    UnadvertiseService,
    UnadvertiseTopic,
    UnsubscribeTopic,
)
from fleet_gateway.protocol.outbox import OutFrame, SendQueue, SendQueueOverflow
from fleet_gateway.protocol.published import PublishedMessage
from fleet_gateway.protocol.session import ClientSession
from fleet_gateway.protocol.state import SessionLimits

__all__ = [
    'AdvertiseAction',
    'AdvertiseService',
    'AdvertiseTopic',
    'CallService',
    'CancelActionGoal',
    'ClientSession',
    'CloseConnection',
    'Event',
    'OutFrame',
    'PublishMessage',
    'PublishedMessage',
    'SendActionGoal',
    'SendQueue',
    'SendQueueOverflow',
    'ServedGoalFeedback',
    'ServedGoalResult',
    'ServiceReply',
    'SessionLimits',
    'SubscribeTopic',
    'UnadvertiseAction',
    'UnadvertiseService',
    'UnadvertiseTopic',
    'UnsubscribeTopic',
]
