"""MCAP writing and reading, `fleetctl trace --from`, and bad recordings (exit 2)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mcap.reader import make_reader

from fleet_cli.main import main as fleetctl
from fleet_core.trace import Hop, TraceRecord
from fleet_observability.recorder import McapFleetWriter, RecordingError, read_recording, recording_topics

T0 = 1_700_000_000.0
TRACE = '/fleet/site_a/zone_1/trace'


def hops(command_id: str) -> list[TraceRecord]:
    def rec(hop: Hop, ms: float, attempt: int = 0, status: str = '', node: str = 'orchestrator_zone_1') -> TraceRecord:
        return TraceRecord(command_id, 'trace-9', 'a1_r001', 'zone_1', node, hop, T0 + ms / 1000, attempt, status)

    return [
        rec(Hop.SUBMIT, 0),
        rec(Hop.ROUTE, 0.5),
        rec(Hop.DELIVER, 1, 1, 'SENT'),
        rec(Hop.RECEIVE, 1.7, 1, 'RECEIVED', node='agent_a1_r001'),
        rec(Hop.ACK, 9, 1, 'SUCCEEDED'),
        rec(Hop.OUTCOME, 9.5, 0, 'SUCCEEDED'),
    ]


def write_trace_file(path: Path, command_id: str = 'cmd-1') -> list[TraceRecord]:
    from nav_msgs.msg import Odometry
    from rclpy.serialization import serialize_message

    from fleet_ros.trace_msgs import trace_to_msg

    records = hops(command_id)
    writer = McapFleetWriter(path)
    # written in reverse: the timeline must not depend on arrival order
    for i, record in enumerate(reversed(records)):
        data = bytes(serialize_message(trace_to_msg(record)))
        writer.write(TRACE, 'fleet_interfaces/msg/TraceEvent', data, log_time_ns=int(T0 * 1e9) + i)
    odom = Odometry()
    odom.pose.pose.position.y = 2.0
    writer.write('/site_a/a1_r001/odom', 'nav_msgs/msg/Odometry', bytes(serialize_message(odom)), int(T0 * 1e9) + 99)
    writer.close()
    return records


def test_roundtrip_keeps_schemas_and_cdr(tmp_path: Path) -> None:
    from fleet_ros.trace_msgs import trace_from_msg

    path = tmp_path / 'rec.mcap'
    records = write_trace_file(path)
    assert recording_topics(path) == {
        TRACE: 'fleet_interfaces/msg/TraceEvent',
        '/site_a/a1_r001/odom': 'nav_msgs/msg/Odometry',
    }
    messages = list(read_recording(path))
    assert len(messages) == 7
    decoded = [trace_from_msg(m.decode()) for m in messages if m.topic == TRACE]

    def rounded(r: TraceRecord) -> TraceRecord:
        return r._replace(stamp=round(r.stamp, 6))

    assert [rounded(r) for r in sorted(decoded, key=lambda r: r.stamp)] == [rounded(r) for r in records]
    odom = next(m for m in messages if m.topic.endswith('/odom')).decode()
    assert odom.pose.pose.position.y == 2.0

    with path.open('rb') as stream:
        reader = make_reader(stream)
        assert reader.get_header().profile == 'ros2'
        summary = reader.get_summary()
        assert summary is not None
        schemas = {s.name: s for s in summary.schemas.values()}
        assert schemas['fleet_interfaces/msg/TraceEvent'].encoding == 'ros2msg'
        assert b'MSG: builtin_interfaces/Time' in schemas['fleet_interfaces/msg/TraceEvent'].data
        assert {c.message_encoding for c in summary.channels.values()} == {'cdr'}


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / 'rec.mcap'
    write_trace_file(path)
    cut = tmp_path / 'cut.mcap'
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RecordingError, match='truncated or corrupt MCAP'):
        list(read_recording(cut))


def test_foreign_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    foreign = tmp_path / 'notes.mcap'
    foreign.write_text('{"this": "is json"}')
    with pytest.raises(RecordingError, match='not an MCAP file'):
        list(read_recording(foreign))
    with pytest.raises(RecordingError, match='cannot open recording'):
        list(read_recording(tmp_path / 'missing.mcap'))


def test_fleetctl_trace_from_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / 'rec.mcap'
    write_trace_file(path)
    assert fleetctl(['trace', 'cmd-1', '--from', str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith('command cmd-1  trace trace-9  agent a1_r001  shard zone_1')
    assert [line.split()[2] for line in out[2:8]] == ['SUBMIT', 'ROUTE', 'DELIVER', 'RECEIVE', 'ACK', 'OUTCOME']
    assert out[-1] == 'total 9.5 ms over 6 hops, 1 attempt(s): SUCCEEDED'


def test_fleetctl_trace_unknown_command_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / 'rec.mcap'
    write_trace_file(path)
    assert fleetctl(['trace', 'nope', '--from', str(path)]) == 1
    assert "no trace events for command 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize('kind', ['truncated', 'foreign'])
def test_fleetctl_trace_bad_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    path = tmp_path / 'bad.mcap'
    if kind == 'truncated':
        write_trace_file(path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(b'PK\x03\x04 a zip file')
    assert fleetctl(['trace', 'cmd-1', '--from', str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('fleetctl trace: error:')
    assert ('truncated' in err) if kind == 'truncated' else ('not an MCAP file' in err)


def test_fleetctl_record_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / 'exists.mcap'
    path.write_bytes(b'')
    assert fleetctl(['record', '-o', str(path), '--duration', '1']) == 2
    assert 'exists (pass --force' in capsys.readouterr().err
    assert sys.executable
