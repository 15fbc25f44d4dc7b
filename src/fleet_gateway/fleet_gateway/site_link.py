"""`fleet_site_link`: relays a remote site's shard topics to the central gateway as a rosbridge client.

Uplink topics (local ROS -> central) are advertised and published through the gateway; downlink topics
(central -> local ROS) are subscribed through it. The link reconnects with jittered exponential backoff and
re-advertises/resubscribes everything after each reconnect. While disconnected, uplink messages wait in a bounded
per-topic buffer (oldest dropped first, counted). Commands relayed this way keep their command_id, so a message
delivered twice across a cut is still applied at most once by the agents' idempotent intake.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import ssl
import sys
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.node import Node
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from fleet_core import yaml_config
from fleet_gateway.backoff import Backoff
from fleet_gateway.config import QOS_PROFILES, ConfigError
from fleet_gateway.conversion import UnknownType, codec_for, message_class
from fleet_ros import qos
from fleet_ros.runtime import RosProgram, run_program

log = logging.getLogger('fleet_site_link')


@dataclass(frozen=True)
class RelayedTopic:
    local: str
    remote: str
    type: str
    qos: str = 'events'
    buffer: int = 1000


@dataclass(frozen=True)
class SiteLinkConfig:
    url: str
    token_env: str = 'FLEET_SITE_LINK_TOKEN'  # noqa: S105 - the name of the variable holding the token
    ca_file: Path | None = None
    uplink: tuple[RelayedTopic, ...] = ()
    downlink: tuple[RelayedTopic, ...] = ()
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    source: str = '<defaults>'


def load_site_link_config(path: Path) -> SiteLinkConfig:
    source = str(path)
    data = yaml_config.read_yaml(path, 'site link config', ConfigError)
    root = data.get('fleet_site_link') if isinstance(data, dict) else None
    if not isinstance(root, dict):
        raise ConfigError(f'{source}: fleet_site_link: missing or not a mapping')
    url = root.get('url')
    if not isinstance(url, str) or not url.startswith(('ws://', 'wss://')):
        raise ConfigError(f'{source}: fleet_site_link.url: must be a ws:// or wss:// URL')

    def topics(key: str) -> tuple[RelayedTopic, ...]:
        out = []
        for i, item in enumerate(root.get(key) or []):
            where = f'{source}: fleet_site_link.{key}[{i}]'
            if (
                not isinstance(item, dict)
                or not isinstance(item.get('topic'), str)
                or not isinstance(item.get('type'), str)
            ):
                raise ConfigError(f'{where}: needs "topic" and "type" strings')
            try:
                message_class(item['type'])
            except UnknownType as exc:
                raise ConfigError(f'{where}.type: {exc}') from None
            qos = item.get('qos', 'events')
            if qos not in QOS_PROFILES:
                raise ConfigError(f'{where}.qos: must be one of {", ".join(QOS_PROFILES)}')
            buffer = item.get('buffer', 1000)
            if type(buffer) is not int or buffer < 1:
                raise ConfigError(f'{where}.buffer: must be a positive integer')
            remote = item.get('remote', item['topic'])
            if not isinstance(remote, str):
                raise ConfigError(f'{where}.remote: must be a topic name string')
            out.append(RelayedTopic(item['topic'], remote, item['type'], qos, buffer))
        return tuple(out)

    ca = root.get('ca_file')
    return SiteLinkConfig(
        url=url,
        token_env=str(root.get('token_env', 'FLEET_SITE_LINK_TOKEN')),
        ca_file=(path.parent / ca).resolve() if ca else None,
        uplink=topics('uplink'),
        downlink=topics('downlink'),
        backoff_initial_s=float(root.get('backoff_initial_s', 0.5)),
        backoff_max_s=float(root.get('backoff_max_s', 30.0)),
        source=source,
    )


class SiteLink:
    """The relay. ROS callbacks (spin thread) hand messages to the asyncio loop with call_soon_threadsafe."""

    def __init__(self, config: SiteLinkConfig, node: Any, loop: asyncio.AbstractEventLoop, token: str) -> None:
        self.config = config
        self.node = node
        self.loop = loop
        self.token = token
        self.backoff = Backoff(initial=config.backoff_initial_s, maximum=config.backoff_max_s)
        self.buffers: dict[str, deque[str]] = {t.remote: deque(maxlen=t.buffer) for t in config.uplink}
        self.counters = {'connects': 0, 'relayed_up': 0, 'relayed_down': 0, 'dropped_up': 0, 'errors': 0}
        self._wakeup = asyncio.Event()
        self._lock = threading.Lock()
        self._publishers: dict[str, tuple[Any, Any]] = {}
        for topic in config.uplink:
            codec = codec_for(message_class(topic.type))

            def on_local(msg: Any, topic: RelayedTopic = topic, codec: Any = codec) -> None:
                text = json.dumps(
                    {'op': 'publish', 'topic': topic.remote, 'msg': codec.to_json(msg)},
                    separators=(',', ':'),
                    allow_nan=False,
                )
                loop.call_soon_threadsafe(self._queue_up, topic.remote, text)

            node.create_subscription(message_class(topic.type), topic.local, on_local, qos.PROFILES[topic.qos])
        for topic in config.downlink:
            cls = message_class(topic.type)
            self._publishers[topic.remote] = (
                node.create_publisher(cls, topic.local, qos.PROFILES[topic.qos]),
                codec_for(cls),
            )

    def _queue_up(self, remote: str, text: str) -> None:
        buffer = self.buffers[remote]
        if len(buffer) == buffer.maxlen:
            self.counters['dropped_up'] += 1
        buffer.append(text)
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        ssl_context = ssl.create_default_context(cafile=str(self.config.ca_file)) if self.config.ca_file else None
        headers = {'Authorization': f'Bearer {self.token}'}
        while not stop.is_set():
            hint = None
            try:
                async with connect(
                    self.config.url, additional_headers=headers, ssl=ssl_context, compression=None, open_timeout=10
                ) as ws:
                    self.counters['connects'] += 1
                    log.info('site link connected to %s (connect #%d)', self.config.url, self.counters['connects'])
                    await self._session(ws, stop)
                    self.backoff.reset()
            except InvalidStatus as exc:
                self.counters['errors'] += 1
                retry = exc.response.headers.get('Retry-After')
                hint = float(retry) if retry and retry.isdigit() else None
                log.warning('gateway refused the site link: HTTP %d', exc.response.status_code)
            except (OSError, TimeoutError, ConnectionError) as exc:
                self.counters['errors'] += 1
                log.warning('site link to %s lost: %s', self.config.url, exc)
            except Exception as exc:  # noqa: BLE001 - last-resort boundary of the reconnect loop: log, back off, retry
                self.counters['errors'] += 1
                log.warning('site link to %s closed: %s: %s', self.config.url, type(exc).__name__, exc)
            if stop.is_set():
                break
            delay = self.backoff.next_delay(hint)
            log.info('site link reconnecting in %.2f s', delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _session(self, ws: Any, stop: asyncio.Event) -> None:
        for topic in self.config.uplink:
            await ws.send(
                json.dumps({'op': 'advertise', 'id': f'up:{topic.remote}', 'topic': topic.remote, 'type': topic.type})
            )
        for topic in self.config.downlink:
            await ws.send(
                json.dumps({'op': 'subscribe', 'id': f'down:{topic.remote}', 'topic': topic.remote, 'type': topic.type})
            )
        reader = asyncio.create_task(self._read(ws))
        try:
            while not stop.is_set() and not reader.done():
                self._wakeup.clear()
                for buffer in self.buffers.values():
                    while buffer:
                        await ws.send(buffer[0])
                        buffer.popleft()  # only after the send succeeded: a cut keeps it for the next connection
                        self.counters['relayed_up'] += 1
                waiter = asyncio.create_task(self._wakeup.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper, reader}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
            if reader.done():
                reader.result()
        finally:
            reader.cancel()

    async def _read(self, ws: Any) -> None:
        async for raw in ws:
            if not isinstance(raw, str):
                continue
            message = json.loads(raw)
            op = message.get('op')
            if op == 'publish' and message.get('topic') in self._publishers:
                publisher, codec = self._publishers[message['topic']]
                publisher.publish(codec.from_json(message.get('msg', {})))
                self.counters['relayed_down'] += 1
            elif op == 'status' and message.get('level') == 'error':
                self.counters['errors'] += 1
                log.error('gateway rejected a site link request %s: %s', message.get('id'), message.get('msg'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='fleet_site_link', description=__doc__.splitlines()[0])
    parser.add_argument('--config', type=Path, required=True, help='site link YAML (fleet_site_link: url, uplink, ...)')
    parser.add_argument('--log-level', default='INFO')
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    logging.getLogger('websockets').setLevel(logging.WARNING)
    try:
        config = load_site_link_config(args.config)
    except ConfigError as exc:
        log.error('%s', exc)
        return 2
    token = os.environ.get(config.token_env, '')
    if not token:
        log.error('set the site link token in $%s (tokens never live in config files)', config.token_env)
        return 2

    return run_program('fleet_site_link', lambda program: _run(program, config, token))


def _run(program: RosProgram, config: SiteLinkConfig, token: str) -> None:
    node = program.add_node(Node('fleet_site_link', context=program.context))
    link = SiteLink(config, node, program.loop, token)

    async def report() -> None:
        log.info('site link stopped: %s', link.counters)

    # The link watches stop_event itself (it closes its connection and leaves its backoff wait).
    program.run_async(lambda: link.run(program.stop_event), cleanup=report, cancel_on_stop=False)


if __name__ == '__main__':
    sys.exit(main())
