"""The ROS side's one mechanism for client-served services and actions (`ros.served.ServedRegistry`), without ROS:
one owner per name, in a cluster also through the workers' shared names, and every claim given back."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest
from rclpy.node import Node

from fleet_gateway.ros import graph as ros_graph
from fleet_gateway.ros.graph import EndpointConflict
from fleet_gateway.ros.served import ServedEndpoint, ServedRegistry
from fleet_gateway.transport.shared import NameTaken


class Names:
    """The cluster's shared names, as one worker sees them: `taken` are held by another worker's clients."""

    def __init__(self, taken: set[str] = frozenset()) -> None:
        self.taken = set(taken)
        self.held: dict[tuple[str, str], object] = {}

    def claim(self, kind: str, name: str, owner: object) -> bool:
        if name in self.taken:
            raise NameTaken(f'{name} is already served through the gateway by another client')
        if self.held.get((kind, name)) is owner:
            return False
        self.held[(kind, name)] = owner
        return True

    def release(self, kind: str, name: str, owner: object) -> None:
        if self.held.get((kind, name)) is owner:
            del self.held[(kind, name)]


def test_one_owner_per_name_and_waiting_requests_come_back_on_release():
    ros_nodes = {'/by_ros'}
    registry: ServedRegistry[str] = ServedRegistry('service', ros_nodes.__contains__)
    a, b = object(), object()
    assert registry.claim('/s', int, a) is False
    registry.add(ServedEndpoint('/s', int, a))
    assert registry.claim('/s', int, a) is True  # advertised again by its owner: nothing to do
    with pytest.raises(EndpointConflict, match='another client'):
        registry.claim('/s', int, b)
    with pytest.raises(EndpointConflict, match='another client'):
        registry.claim('/s', str, a)
    with pytest.raises(EndpointConflict, match='ROS node'):
        registry.claim('/by_ros', int, a)
    endpoint = registry.get('/s')
    assert endpoint is not None
    token = registry.new_token()
    endpoint.waiting[token] = 'header'
    assert registry.take('/s', token) == (endpoint, 'header') and registry.take('/s', token) is None
    endpoint.waiting[registry.new_token()] = 'still waiting'
    assert registry.release('/s', b) is None  # not b's
    released = registry.release('/s', a)
    assert released is endpoint and released.closed and list(released.waiting.values()) == ['still waiting']
    assert registry.get('/s') is None and registry.owners() == {}


def test_in_a_cluster_names_are_claimed_in_the_shared_table_and_always_given_back():
    names = Names(taken={'/elsewhere'})
    registry: ServedRegistry[str] = ServedRegistry('action', {'/by_ros'}.__contains__)
    registry.names = names
    a = object()
    with pytest.raises(EndpointConflict, match='another client'):
        registry.claim('/elsewhere', int, a)  # served by a client of another worker
    with pytest.raises(EndpointConflict, match='ROS node'):
        registry.claim('/by_ros', int, a)
    assert names.held == {}  # the claim of a name a ROS node serves is given back
    assert registry.claim('/x', int, a) is False and names.held == {('action', '/x'): a}
    registry.abandon('/x', a)  # its server could not be made
    assert names.held == {}
    registry.claim('/x', int, a)
    registry.add(ServedEndpoint('/x', int, a))
    registry.abandon('/x', a)  # made after all: not given up
    assert names.held == {('action', '/x'): a}
    registry.release('/x', a)
    assert names.held == {}


class Graph:
    """The ROS graph as the gateway node `me` sees it: each node (name, namespace) with the services it serves."""

    def __init__(self, me: tuple[str, str], nodes: dict[tuple[str, str], set[str]]):
        self.me, self.nodes = me, nodes

    def get_name(self) -> str:
        return self.me[0]

    def get_namespace(self) -> str:
        return self.me[1]

    def get_subscriptions_info_by_topic(self, topic: str, no_mangle: bool) -> list[SimpleNamespace]:
        assert no_mangle
        return [
            SimpleNamespace(node_name=name, node_namespace=namespace)
            for (name, namespace), served in self.nodes.items()
            for service in served
            if ros_graph.request_topic(service) == topic
        ]


def served_elsewhere(graph: Graph, service: str, worker: int | None) -> bool:
    node = cast(Node, graph)
    return ros_graph.served_elsewhere(node, service, ros_graph.cluster_nodes(node, worker))


def test_the_graph_speaks_for_other_nodes_than_the_gateway_cluster():
    goal = '/served/mission/_action/send_goal'
    # Worker 1 still sees the server worker 0 destroyed when its client left: the cluster's claims decide that one.
    sibling_left = {('fleet_gateway', '/'): {goal}, ('fleet_gateway_w1', '/'): set()}
    assert not served_elsewhere(Graph(('fleet_gateway_w1', '/'), sibling_left), goal, 1)
    assert not served_elsewhere(Graph(('fleet_gateway', '/'), {('fleet_gateway_w2', '/'): {goal}}), goal, 0)
    # A ROS node serves it, with or without a sibling's server beside it.
    planner = {('planner', '/'): {goal}, ('fleet_gateway', '/'): {goal}, ('fleet_gateway_w1', '/'): set()}
    assert served_elsewhere(Graph(('fleet_gateway_w1', '/'), planner), goal, 1)
    # Only the cluster's own names in its own namespace are its workers; a gateway alone has no siblings.
    assert served_elsewhere(Graph(('fleet_gateway_w1', '/'), {('fleet_gateway', '/site_b'): {goal}}), goal, 1)
    assert served_elsewhere(Graph(('fleet_gateway_w1', '/'), {('fleet_gateway_wx', '/'): {goal}}), goal, 1)
    assert served_elsewhere(Graph(('fleet_gateway', '/'), {('fleet_gateway_w1', '/'): {goal}}), goal, None)
    assert not served_elsewhere(Graph(('fleet_gateway', '/'), {('fleet_gateway', '/'): set()}), goal, None)
    # A server whose node no longer (or not yet) claims it: the graph cannot say whose it is, and it does not count
    # (the server a sibling destroyed, once the sibling's announcement arrived before the endpoint's removal).
    unknown = (ros_graph.UNKNOWN_NODE, '_NODE_NAMESPACE_UNKNOWN_')
    assert not served_elsewhere(Graph(('fleet_gateway_w1', '/'), {unknown: {goal}}), goal, 1)
    assert not served_elsewhere(Graph(('fleet_gateway', '/'), {unknown: {goal}}), goal, None)
    assert served_elsewhere(Graph(('fleet_gateway', '/'), {unknown: {goal}, ('planner', '/'): {goal}}), goal, None)
    assert not served_elsewhere(Graph(('fleet_gateway', '/'), {('planner', '/'): {'/other'}}), goal, None)
