"""The ROS side of Foxglove's connection graph: which nodes publish and subscribe the exposed topics and which serve
the forwarded services, as a comparable snapshot and as the SDK's `ConnectionGraph`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from foxglove import ConnectionGraph
from rclpy.node import Node


def _node_name(namespace: str, name: str) -> str:
    return f'{namespace.rstrip("/")}/{name}'


@dataclass(frozen=True)
class GraphSnapshot:
    """Topic or service name -> sorted fully qualified node names."""

    published: tuple[tuple[str, tuple[str, ...]], ...]
    subscribed: tuple[tuple[str, tuple[str, ...]], ...]
    services: tuple[tuple[str, tuple[str, ...]], ...]

    def to_sdk(self) -> ConnectionGraph:
        graph = ConnectionGraph()
        for topic, ids in self.published:
            graph.set_published_topic(topic, list(ids))
        for topic, ids in self.subscribed:
            graph.set_subscribed_topic(topic, list(ids))
        for service, ids in self.services:
            graph.set_advertised_service(service, list(ids))
        return graph


def ros_graph(node: Node, topics: Iterable[str], services: Iterable[str]) -> GraphSnapshot:
    """Query the ROS graph for `topics` and `services`; `node` itself (the server) is left out."""
    own = node.get_fully_qualified_name()

    def names(infos: Any) -> tuple[str, ...]:
        return tuple(sorted({_node_name(i.node_namespace, i.node_name) for i in infos} - {own}))

    topic_list = sorted(topics)
    providers: dict[str, set[str]] = {name: set() for name in services}
    if providers:
        for name, namespace in node.get_node_names_and_namespaces():
            for service, _types in node.get_service_names_and_types_by_node(name, namespace):
                if service in providers:
                    providers[service].add(_node_name(namespace, name))
    return GraphSnapshot(
        published=tuple((t, names(node.get_publishers_info_by_topic(t))) for t in topic_list),
        subscribed=tuple((t, names(node.get_subscriptions_info_by_topic(t))) for t in topic_list),
        services=tuple((s, tuple(sorted(ids))) for s, ids in sorted(providers.items())),
    )
