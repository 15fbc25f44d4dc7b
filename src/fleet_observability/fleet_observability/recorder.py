"""MCAP recording of fleet topics (ros2 profile: ros2msg schemas, CDR payloads as received) and reading back.

Files written here open in Foxglove and in any MCAP tool. Reading is strict: a file that is not MCAP, or that
was cut short (no footer, e.g. the recorder was killed), raises RecordingError with what to do about it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.writer import Writer
from rclpy.node import Node
from rclpy.serialization import deserialize_message

from fleet_observability.discovery import DiscoveredTopic, InterfaceImportError, RawTopicFollower, import_interface
from fleet_observability.ros2msg import SchemaLibrary, SchemaNotFound, schema_name
from fleet_observability.topic_match import TopicSelector

MCAP_MAGIC = b'\x89MCAP0\r\n'
PROFILE = 'ros2'
LIBRARY = 'fleetlanes-recorder'


class RecordingError(ValueError):
    """A recording that cannot be read (missing, not MCAP, truncated, or without the needed schemas)."""


@dataclass(frozen=True, slots=True)
class RecordedMessage:
    topic: str
    schema_name: str
    """'pkg/msg/Type'."""
    log_time_ns: int
    data: bytes

    def decode(self) -> Any:
        """The rclpy message (imports the generated type). Raises RecordingError when it cannot be decoded."""
        try:
            msg_class = import_interface(self.schema_name)
        except InterfaceImportError as exc:
            raise RecordingError(str(exc)) from None
        try:
            return deserialize_message(self.data, msg_class)
        except RuntimeError as exc:
            raise RecordingError(f'{self.topic}: message at {self.log_time_ns} does not decode: {exc}') from None


class McapFleetWriter:
    """Writes CDR messages with their ros2msg schemas; channels and schemas are registered on first use."""

    def __init__(self, output: str | Path | IO[bytes], *, schemas: SchemaLibrary | None = None) -> None:
        self._own = isinstance(output, (str, Path))
        self._stream: IO[bytes] = open(output, 'wb') if isinstance(output, (str, Path)) else output
        self._writer = Writer(self._stream)
        self._writer.start(profile=PROFILE, library=LIBRARY)
        self._schemas = schemas or SchemaLibrary()
        self._schema_ids: dict[str, int] = {}
        self._channel_ids: dict[str, int] = {}
        self._sequence = 0
        self.counts: dict[str, int] = {}
        self._closed = False

    def add_topic(self, topic: str, type_name: str) -> None:
        """Register a channel ahead of its first message. Raises SchemaNotFound."""
        if topic in self._channel_ids:
            return
        name = schema_name(type_name)
        if name not in self._schema_ids:
            text = self._schemas.message(type_name)
            self._schema_ids[name] = self._writer.register_schema(name=name, encoding='ros2msg', data=text.encode())
        self._channel_ids[topic] = self._writer.register_channel(
            topic=topic, message_encoding='cdr', schema_id=self._schema_ids[name]
        )
        self.counts.setdefault(topic, 0)

    def write(self, topic: str, type_name: str, data: bytes, log_time_ns: int | None = None) -> None:
        if self._closed:
            return
        self.add_topic(topic, type_name)
        stamp = time.time_ns() if log_time_ns is None else log_time_ns
        self._sequence += 1
        self._writer.add_message(
            channel_id=self._channel_ids[topic], log_time=stamp, data=data, publish_time=stamp, sequence=self._sequence
        )
        self.counts[topic] += 1

    def close(self) -> None:
        """Write the summary and footer (a file without them is reported as truncated by the reader)."""
        if self._closed:
            return
        self._closed = True
        self._writer.finish()
        if self._own:
            self._stream.close()


class FleetRecorder:
    """Follows topics matching `selector` on `node` and writes each message to an McapFleetWriter.

    Call `poll()` periodically (a node timer) to pick up topics that appear later; `close()` finishes the file.
    """

    def __init__(self, node: Node, selector: TopicSelector, writer: McapFleetWriter) -> None:
        self._node = node
        self.writer = writer
        self._follower = RawTopicFollower(node, selector, self._on_message, on_new=self._on_new)

    def _on_new(self, topic: DiscoveredTopic) -> bool:
        try:
            self.writer.add_topic(topic.name, topic.type_name)
        except SchemaNotFound as exc:
            self._node.get_logger().warning(f'not recording {topic.name}: {exc}')
            return False
        return True

    def _on_message(self, topic: DiscoveredTopic, data: bytes) -> None:
        self.writer.write(topic.name, topic.type_name, data)

    def poll(self) -> list[DiscoveredTopic]:
        return self._follower.poll()

    @property
    def topics(self) -> dict[str, DiscoveredTopic]:
        return self._follower.topics

    def close(self) -> None:
        self._follower.close()
        self.writer.close()


def _check_magic(path: Path) -> None:
    try:
        with path.open('rb') as f:
            head = f.read(len(MCAP_MAGIC))
    except OSError as exc:
        raise RecordingError(f'{path}: cannot open recording: {exc.strerror}') from None
    if head != MCAP_MAGIC:
        raise RecordingError(f'{path}: not an MCAP file (record one with `fleetctl record -o FILE.mcap`)')


def read_recording(path: str | Path, *, topics: set[str] | None = None) -> Iterator[RecordedMessage]:
    """Messages of a recording in log-time order (optionally only some topics). Raises RecordingError."""
    file = Path(path)
    _check_magic(file)
    with file.open('rb') as stream:
        try:
            reader = make_reader(stream)
            for schema, channel, message in reader.iter_messages(topics=list(topics) if topics else None):
                if schema is None or schema.encoding != 'ros2msg' or channel.message_encoding != 'cdr':
                    continue
                yield RecordedMessage(
                    topic=channel.topic, schema_name=schema.name, log_time_ns=message.log_time, data=message.data
                )
        except (McapError, EOFError, ValueError, OSError) as exc:
            if isinstance(exc, RecordingError):
                raise
            raise RecordingError(
                f'{file}: truncated or corrupt MCAP ({type(exc).__name__}: {exc}); '
                'was the recorder stopped before it finished the file?'
            ) from None


def recording_topics(path: str | Path) -> dict[str, str]:
    """Topic -> schema name of a recording (from its summary). Raises RecordingError."""
    file = Path(path)
    _check_magic(file)
    with file.open('rb') as stream:
        try:
            summary = make_reader(stream).get_summary()
        except (McapError, EOFError, ValueError, OSError) as exc:
            raise RecordingError(f'{file}: truncated or corrupt MCAP ({type(exc).__name__}: {exc})') from None
    if summary is None:
        raise RecordingError(f'{file}: MCAP without a summary (truncated?)')
    return {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()}
