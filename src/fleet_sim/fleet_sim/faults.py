"""Fault injection for simulated agents: link cuts, slow-downs and clock skew, addressed to a host or to agents.
Pure: the host node decodes Fault requests from the fault topic and asks FaultState what to drop and when."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fleet_core import topics

FAULT_TOPIC = topics.SIM_FAULTS
"""std_msgs/String carrying one Fault as JSON; every simulator host listens and applies what addresses it."""

OPS = ('cut', 'restore', 'slow', 'skew', 'clear')


class FaultError(ValueError):
    """A fault request is malformed; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class Fault:
    """`cut`: drop the link (commands in, acks and heartbeats out) for `duration_sec`; `restore`: end a cut now;
    `slow`: multiply execution times by `factor`; `skew`: offset the agents' clocks by `offset_sec`;
    `clear`: undo every fault. Targets: `host` (every agent of that host process) and/or `agents`."""

    op: str
    host: str = ''
    agents: tuple[str, ...] = field(default=())
    duration_sec: float = 0.0
    factor: float = 1.0
    offset_sec: float = 0.0

    def to_json(self) -> str:
        return json.dumps(
            {
                'op': self.op,
                'host': self.host,
                'agents': list(self.agents),
                'duration_sec': self.duration_sec,
                'factor': self.factor,
                'offset_sec': self.offset_sec,
            }
        )

    def addresses(self, host: str, agent_id: str) -> bool:
        return (bool(self.host) and self.host in (host, '*')) or agent_id in self.agents


def _number(raw: dict[str, object], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultError(f'fault field {key!r} must be a finite number, got {value!r}')
    return float(value)


def parse_fault(text: str) -> Fault:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise FaultError(f'fault is not JSON: {exc}') from None
    if not isinstance(raw, dict):
        raise FaultError('fault must be a JSON object')
    op = raw.get('op')
    if op not in OPS:
        raise FaultError(f'fault op must be one of {", ".join(OPS)}, got {op!r}')
    host = raw.get('host', '')
    agents = raw.get('agents', [])
    if not isinstance(host, str) or not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
        raise FaultError('fault host must be a string and agents a list of strings')
    if not host and not agents:
        raise FaultError('fault needs a target: host (or "*") and/or agents')
    fault = Fault(
        op=op,
        host=host,
        agents=tuple(agents),
        duration_sec=_number(raw, 'duration_sec', 0.0),
        factor=_number(raw, 'factor', 1.0),
        offset_sec=_number(raw, 'offset_sec', 0.0),
    )
    if fault.op == 'cut' and fault.duration_sec <= 0:
        raise FaultError('a cut needs duration_sec > 0 (cuts always end by themselves)')
    if fault.op == 'slow' and fault.factor <= 0:
        raise FaultError('slow needs factor > 0')
    return fault


class FaultState:
    """The faults currently applied to the agents of one host. `monotonic` times the cuts."""

    def __init__(self, host: str, agents: Iterable[str], *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.agents = tuple(agents)
        self._monotonic = monotonic
        self._cut_until: dict[str, float] = {}
        self._slow: dict[str, float] = {}
        self._offset: dict[str, float] = {}
        self.dropped = 0

    def apply(self, fault: Fault) -> list[str]:
        """Apply `fault` to the agents it addresses; returns them (empty when it is not for this host)."""
        targets = [a for a in self.agents if fault.addresses(self.host, a)]
        now = self._monotonic()
        for agent in targets:
            if fault.op == 'cut':
                self._cut_until[agent] = max(self._cut_until.get(agent, 0.0), now + fault.duration_sec)
            elif fault.op == 'restore':
                self._cut_until.pop(agent, None)
            elif fault.op == 'slow':
                self._slow[agent] = fault.factor
            elif fault.op == 'skew':
                self._offset[agent] = fault.offset_sec
            else:
                self._cut_until.pop(agent, None)
                self._slow.pop(agent, None)
                self._offset.pop(agent, None)
        return targets

    def link_up(self, agent_id: str) -> bool:
        until = self._cut_until.get(agent_id)
        if until is None:
            return True
        if self._monotonic() >= until:
            del self._cut_until[agent_id]
            return True
        return False

    def allow(self, agent_id: str) -> bool:
        """link_up, counting what is dropped."""
        if self.link_up(agent_id):
            return True
        self.dropped += 1
        return False

    def slow_factor(self, agent_id: str) -> float:
        return self._slow.get(agent_id, 1.0)

    def clock_offset(self, agent_id: str) -> float:
        return self._offset.get(agent_id, 0.0)

    def agent_clock(self, agent_id: str, wall: Callable[[], float] = time.time) -> Callable[[], float]:
        """The agent's (possibly skewed) UTC clock; the offset is read on every call so skew applies live."""
        return lambda: wall() + self._offset.get(agent_id, 0.0)
