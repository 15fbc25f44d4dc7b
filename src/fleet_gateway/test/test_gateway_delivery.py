"""Pure tests of what a client's connection writes: telemetry that would be past its staleness bound by the time the
client reads it is dropped, not written; reliable frames always go, in order."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from websockets.protocol import State

from fleet_gateway.protocol.outbox import OutFrame, SendQueue
from fleet_gateway.transport.connection import ClientConnection


class _Transport:
    def __init__(self) -> None:
        self.data = b''

    def write(self, data: bytes) -> None:
        self.data += data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


def _connection(loop: asyncio.AbstractEventLoop) -> tuple[ClientConnection, SendQueue, _Transport]:
    transport = _Transport()
    outbox = SendQueue(max_frames=100, max_bytes=10**6, critical_max_bytes=10**6)
    ws = SimpleNamespace(transport=transport, protocol=SimpleNamespace(state=State.OPEN))
    session = SimpleNamespace(outbox=outbox, backlog_keep=0, backlog_rate=0.0)
    return ClientConnection(ws, session, loop), outbox, transport  # type: ignore[arg-type]  # stand-ins


def test_telemetry_that_would_be_stale_when_the_client_reads_it_is_dropped_not_written():
    loop = asyncio.new_event_loop()
    try:
        conn, outbox, transport = _connection(loop)
        conn._pipe_delay = 1.0  # the last ping took 1 s to come back: what is written now is read in about 1 s
        now = time.monotonic()
        outbox.put(OutFrame('late-pose', expires=now + 0.5), '/pose')  # fresh now, stale by the time it is read
        outbox.put(OutFrame('event'), '/events')  # reliable: never stale, never dropped
        outbox.put(OutFrame('fresh-pose', expires=now + 5.0), '/pose')
        conn.flush()
        assert b'late-pose' not in transport.data and outbox.stale_total == 1 and outbox.drops == {'/pose': 1}
        assert transport.data.index(b'event') < transport.data.index(b'fresh-pose') and len(outbox) == 0
        # the pipe delay is measured again at once (a ping, though far less than a window is in flight); once the
        # client answers it quickly, the same frame goes
        assert conn._ping is not None and transport.data.endswith(conn._ping[0])
        assert conn.on_pong(conn._ping[0]) and conn._pipe_delay < 0.5
        outbox.put(OutFrame('late-pose', expires=time.monotonic() + 0.5), '/pose')
        conn.flush()
        assert b'late-pose' in transport.data and outbox.stale_total == 1
    finally:
        loop.close()
