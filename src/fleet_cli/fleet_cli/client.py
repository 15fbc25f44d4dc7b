"""FleetClient: the operator side of the ROS graph for fleetctl, on the program runtime (`fleet_ros.runtime`: own
context with rclpy's signal handlers off, a short-lived program's wait-set executor spun by the caller, ordered
shutdown). SIGINT/SIGTERM ask the session to stop: the next spin raises `Interrupted` (a KeyboardInterrupt, which
fleetctl turns into exit 130 without a traceback) while the context is still valid, and `close()` shuts the session
down in order."""

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
DISCOVERY_WAIT_SEC = 10.0
"""How long fleetctl waits for a shard leader's service or latched topic to be discovered. fleetctl is a fresh
process: on a loaded host its discovery of a live leader has taken more than 3 s. A shard with no reachable leader
costs this wait; the others end as soon as they answer."""
REPLY_TIMEOUT_SEC = 5.0
"""How long fleetctl waits for a discovered leader's reply to a call."""
LATCHED_SETTLE_SEC = 1.0
"""How long after our subscription matched a latched publisher its message may take to arrive; a publisher that sent
none by then has none (e.g. a shard that never ran a mission)."""


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
        self.program = self._session.enter_context(ros_program(name, short_lived=True))
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

    def call(
        self,
        srv_type: Any,
        name: str,
        request: Any,
        timeout: float = REPLY_TIMEOUT_SEC,
        discovery: float = DISCOVERY_WAIT_SEC,
    ) -> Any:
        """One call: up to `discovery` seconds for the service to be discovered, then `timeout` for the reply."""
        client = self.node.create_client(srv_type, name)
        try:
            self.spin_until(client.service_is_ready, discovery, f'service {name} (is the orchestrator running?)')
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
        settle: float = LATCHED_SETTLE_SEC,
    ) -> dict[tuple[str, str], Any]:
        """The last (latched) message of each shard's topic; absent for a shard whose publisher has no message (none
        `settle` seconds after our subscription matched it) or was not discovered within `wait` seconds. Waiting is
        on conditions, not a fixed time: a latched message arrives right after the match, and discovery on a loaded
        host can take seconds, so it ends as soon as every shard has its message or has settled without one."""
        found: dict[tuple[str, str], Any] = {}
        subs = {
            key: self.node.create_subscription(msg_type, topic_of(*key), partial(found.__setitem__, key), qos_profile)
            for key in keys
        }
        matched_at: dict[tuple[str, str], float] = {}
        deadline = time.monotonic() + wait
        try:
            while True:
                now = time.monotonic()
                missing = [key for key in keys if key not in found]
                for key in missing:
                    if key not in matched_at and subs[key].get_publisher_count() > 0:
                        matched_at[key] = now
                if all(key in matched_at and now - matched_at[key] >= settle for key in missing):
                    break
                if now >= deadline and not any(key in matched_at for key in missing):
                    break
                if now >= deadline + settle:
                    break
                self.spin_once(0.05)
        finally:
            for sub in subs.values():
                self.node.destroy_subscription(sub)
        return found

    def close(self) -> None:
        """The runtime's ordered shutdown (node, executor, then the context); the previous signal handlers return."""
        self._session.close()
