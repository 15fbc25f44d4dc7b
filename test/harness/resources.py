"""What a node or a process holds, for teardown tests: a node's entities by kind and the descriptors this process
has open on files below a directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ENTITY_KINDS = ('publishers', 'subscriptions', 'timers', 'clients', 'services', 'guards', 'waitables')


def entities(node: Any) -> dict[str, int]:
    """How many of each kind of entity `node` holds (rclpy's Node properties)."""
    return {kind: len(list(getattr(node, kind))) for kind in ENTITY_KINDS}


def open_files_under(directory: Path) -> list[str]:
    """Paths below `directory` this process holds a descriptor on (e.g. a SQLite database, its WAL and shm files)."""
    held = []
    for fd in os.listdir('/proc/self/fd'):
        try:
            target = os.readlink(f'/proc/self/fd/{fd}')
        except OSError:  # closed between listdir and readlink
            continue
        if target.startswith(str(directory)):
            held.append(target)
    return held


def node_names(observer: Any) -> list[str]:
    """Names of the nodes `observer` sees in the graph."""
    return [name for name, _namespace in observer.get_node_names_and_namespaces()]
