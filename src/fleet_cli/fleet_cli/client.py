"""FleetClient: the operator side of the ROS graph for fleetctl, on the program runtime (`fleet_ros.runtime`: own
context with rclpy's signal handlers off, EventsExecutor spun by the caller, ordered shutdown). SIGINT/SIGTERM ask
the session to stop: the next spin raises `Interrupted` (a KeyboardInterrupt, which fleetctl turns into exit 130
without a traceback) while the context is still valid, and `close()` shuts the session down in order."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from rclpy.node import Node
from rclpy.qos import QoSProfile

from fleet_core.config import ConfigError, FleetConfig, load_fleet_config
from fleet_ros.runtime import ros_program

T = TypeVar('T')

DEFAULT_CONFIG = Path('config/fleet.yaml')


class ClientTimeout(RuntimeError):
    """The fleet did not answer in time; the message says what was awaited."""


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM asked the session to stop (a KeyboardInterrupt: fleetctl's main exits 130 on it)."""


def load_config(path: str | None) -> FleetConfig:
    """--config, else $FLEETLANES_CONFIG, else config/fleet.yaml in the current directory."""
    chosen = path or os.environ.get('FLEETLANES_CONFIG') or (str(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else None)
    if chosen is None:
        raise ConfigError('no fleet config: pass --config FILE or set $FLEETLANES_CONFIG')
    return load_fleet_config(chosen)


class FleetClient:
    def __init__(self, name: str = 'fleetctl') -> None:
        self._session = ExitStack()
        self.program = self._session.enter_context(ros_program(name))
        try:
            self.context = self.program.context
            self.executor = self.program.executor
            self.node = self.program.add_node(Node(f'{name}_{os.getpid()}', context=self.context))
        except BaseException:
            self._session.close()
            raise

    def spin_once(self, timeout_sec: float = 0.05) -> None:
        """One executor slice, or `Interrupted` once a stop was requested (checked before and after the slice)."""
        if self.program.stop_requested:
            raise Interrupted(self.program.stop_reason)
        self.executor.spin_once(timeout_sec=timeout_sec)
        if self.program.stop_requested:
            raise Interrupted(self.program.stop_reason)

    def spin(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.context.ok():
            self.spin_once(min(0.05, max(0.0, deadline - time.monotonic())))

    def spin_until(self, condition: Callable[[], T], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise ClientTimeout(f'timed out after {timeout:.1f}s waiting for {what}')
            self.spin_once(0.02)

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 5.0) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            self.spin_until(client.service_is_ready, timeout, f'service {name} (is the orchestrator running?)')
            future = client.call_async(request)
            self.spin_until(future.done, timeout, f'a reply from {name}')
            return future.result()
        finally:
            self.node.destroy_client(client)

    def latest_per_shard(
        self,
        msg_type: Any,
        topic_of: Callable[[str, str], str],
        keys: Sequence[tuple[str, str]],
        qos_profile: QoSProfile,
        wait: float,
        *,
        patience: float = 0.0,
    ) -> dict[tuple[str, str], Any]:
        """The last (latched) message of each shard's topic; shards that say nothing within `wait` are absent.
        A shard whose topic has a publisher gets up to `patience` seconds in all: its latched message is on its way
        (discovery on a loaded host can take longer than `wait`)."""
        found: dict[tuple[str, str], Any] = {}
        subs = [
            self.node.create_subscription(msg_type, topic_of(*key), partial(found.__setitem__, key), qos_profile)
            for key in keys
        ]
        started = time.monotonic()
        while len(found) < len(keys):
            elapsed = time.monotonic() - started
            if elapsed >= max(wait, patience):
                break
            missing = [key for key in keys if key not in found]
            if elapsed >= wait and not any(self.node.count_publishers(topic_of(*key)) > 0 for key in missing):
                break
            self.spin_once(0.05)
        for sub in subs:
            self.node.destroy_subscription(sub)
        return found

    def close(self) -> None:
        """The runtime's ordered shutdown (node, executor, then the context); the previous signal handlers return."""
        self._session.close()
