"""The one place fleet topic, service and action names are built (documented in fleet_interfaces/README.md).

Names come in two shapes: a concrete name for one site, shard or agent (`shard_ack('site_a', 'zone_1')`), and a glob
over every site and shard (`shards_glob(ACK)`, `/fleet/*/*/ack`) for access lists and topic selection. Each shard and
agent leaf is classified below by what acts on it, so access lists are derived from one table instead of being
spelled again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_NAME = re.compile(r'^[A-Za-z][A-Za-z0-9_]*$')

FLEET_ROOT = 'fleet'
"""First segment of every shard name: `/fleet/<site>/<shard>/<leaf>`."""

# Leaves of an agent's names (`/<site>/<agent>/<leaf>`).
COMMAND = 'command'
ODOM = 'odom'
CMD_VEL = 'cmd_vel'

# Leaves of a shard's topics (`/fleet/<site>/<shard>/<leaf>`).
ACK = 'ack'
HEARTBEAT = 'heartbeat'
STATUS = 'status'
OUTCOME = 'outcome'
JOURNAL = 'journal'
SUBMISSIONS = 'submissions'
HANDOFF = 'handoff'
HANDOFF_OUTCOMES = 'handoff_outcomes'
TRACE = 'trace'
TASK_EVENTS = 'task_events'
MISSION_JOURNAL = 'mission_journal'
MISSION_HANDOFF = 'mission_handoff'
MISSION_STATUS = 'mission_status'
LEADER = 'leader'
ESTOP = 'estop'
OPERATIONS = 'operations'

# Leaves of a shard's services and actions.
SUBMIT = 'submit'
SET_ESTOP = 'set_estop'
OPERATION = 'operation'
OUTCOMES = 'outcomes'
STATE = 'state'
MISSION_CANCEL = 'mission_cancel'
MISSION = 'mission'

SHARD_CONTROL_TOPICS: tuple[str, ...] = (
    ACK,
    OUTCOME,
    JOURNAL,
    HEARTBEAT,
    STATUS,
    LEADER,
    ESTOP,
    OPERATIONS,
    MISSION_JOURNAL,
    MISSION_HANDOFF,
    MISSION_STATUS,
    SUBMISSIONS,
    HANDOFF,
    HANDOFF_OUTCOMES,
)
"""Shard topics the leader, its standbys or the agents act on: a forged message on one would be acted upon (an
ack settles a command, a journal entry is adopted, the status steers agents). Every new shard topic that anything
acts on belongs here; access lists (`fleet_gateway.acl`) are built from it."""

SHARD_SAFETY_TOPICS: tuple[str, ...] = (ESTOP, OPERATIONS, LEADER)
"""Control topics that steer robots at once (e-stop, fleet-wide pause, the leader lease agents fence on)."""

SHARD_RECORD_TOPICS: tuple[str, ...] = (TRACE, TASK_EVENTS)
"""Shard streams for people and tools (tracing, task events): nothing in the fleet acts on them."""

SHARD_SERVICES: tuple[str, ...] = (SUBMIT, SET_ESTOP, OPERATION, OUTCOMES, STATE, MISSION_CANCEL)
"""Services of a shard's leader."""

SHARD_OPERATOR_SERVICES: tuple[str, ...] = (SUBMIT, SET_ESTOP, OPERATION)
"""The services that change the fleet (submit work, e-stop, pause/resume): what operator tools forward."""

SHARD_ACTIONS: tuple[str, ...] = (MISSION,)
"""Actions of a shard's leader."""

AGENT_CONTROL_TOPICS: tuple[str, ...] = (COMMAND,)
"""Per-agent topics the agent acts on (its commands)."""

AGENT_TELEMETRY_TOPICS: tuple[str, ...] = (ODOM,)
"""Per-agent streams the fleet publishes for people and tools."""

FLEET_GLOB = f'/{FLEET_ROOT}/**'
"""Every shard name of every site (and the operator tools' own names under `/fleet`)."""

FOXGLOVE_LOGIN = f'/{FLEET_ROOT}/login'
"""The Foxglove server's login service (a Foxglove service of its own, not a ROS service)."""

SIM_FAULTS = '/fleet_sim/faults'
"""Fault injection requests to the simulator hosts (outside `/fleet`: not part of any deployment)."""


class InvalidName(ValueError):
    """A site, shard or agent id (or a name leaf) that cannot be used as a ROS name token."""


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise InvalidName(f'{kind} {value!r} must start with a letter and contain only letters, digits and _')
    return value


def compile_glob(pattern: str) -> re.Pattern[str]:
    """The one glob syntax of fleet names (access lists, topic selection, QoS rules): `*` matches within one name
    segment, `**` across segments, `?` one character; the pattern matches whole names."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith('**', i):
            out.append('.*')
            i += 2
            continue
        char = pattern[i]
        if char == '*':
            out.append('[^/]*')
        elif char == '?':
            out.append('[^/]')
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile('^' + ''.join(out) + '$')


def shards_glob(leaf: str) -> str:
    """`/fleet/*/*/<leaf>`: the name `leaf` of every shard of every site (e.g. `shards_glob(ACK)`)."""
    return f'/{FLEET_ROOT}/*/*/{check_name("name leaf", leaf)}'


def agents_glob(leaf: str) -> str:
    """`/*/*/<leaf>`: the name `leaf` of every agent of every site (e.g. `agents_glob(COMMAND)`)."""
    return f'/*/*/{check_name("name leaf", leaf)}'


def shards_globs(leaves: Iterable[str]) -> tuple[str, ...]:
    return tuple(shards_glob(leaf) for leaf in leaves)


def agents_globs(leaves: Iterable[str]) -> tuple[str, ...]:
    return tuple(agents_glob(leaf) for leaf in leaves)


def agent_namespace(site: str, agent: str) -> str:
    return f'/{check_name("site", site)}/{check_name("agent", agent)}'


def agent_command(site: str, agent: str) -> str:
    return f'{agent_namespace(site, agent)}/{COMMAND}'


def agent_odom(site: str, agent: str) -> str:
    return f'{agent_namespace(site, agent)}/{ODOM}'


def shard_prefix(site: str, shard: str) -> str:
    return f'/{FLEET_ROOT}/{check_name("site", site)}/{check_name("shard", shard)}'


def shard_ack(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{ACK}'


def shard_heartbeat(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{HEARTBEAT}'


def shard_status(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{STATUS}'


def shard_outcome(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{OUTCOME}'


def shard_journal(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{JOURNAL}'


def shard_submissions(site: str, shard: str) -> str:
    """Accepted submissions (request ids) replicated from the leader to its standbys."""
    return f'{shard_prefix(site, shard)}/{SUBMISSIONS}'


def shard_handoff(site: str, shard: str) -> str:
    """Unfinished commands a stepped-down leader hands to whoever leads next."""
    return f'{shard_prefix(site, shard)}/{HANDOFF}'


def shard_handoff_outcomes(site: str, shard: str) -> str:
    """Outcomes a replica decided or followed (within retention), handed to a new leader with its unfinished work:
    the new leader settles any command it adopted that another replica already decided (the first decision wins)."""
    return f'{shard_prefix(site, shard)}/{HANDOFF_OUTCOMES}'


def shard_outcomes_query(site: str, shard: str) -> str:
    """GetOutcomes service of the leader (fates by command id from its journal)."""
    return f'{shard_prefix(site, shard)}/{OUTCOMES}'


def shard_state(site: str, shard: str) -> str:
    """GetShardState service of the leader (e-stop, pause, unfinished work)."""
    return f'{shard_prefix(site, shard)}/{STATE}'


def shard_trace(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{TRACE}'


def shard_task_events(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{TASK_EVENTS}'


def shard_mission_journal(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{MISSION_JOURNAL}'


def shard_mission_handoff(site: str, shard: str) -> str:
    """The running mission of a replica that does not lead, for a leader that took over without a copy of it (latched:
    a leader that discovers the replica late still gets it)."""
    return f'{shard_prefix(site, shard)}/{MISSION_HANDOFF}'


def shard_mission_status(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{MISSION_STATUS}'


def shard_mission_cancel(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{MISSION_CANCEL}'


def shard_leader(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{LEADER}'


def shard_estop(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{ESTOP}'


def shard_operations(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{OPERATIONS}'


def shard_submit(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{SUBMIT}'


def shard_set_estop(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{SET_ESTOP}'


def shard_operation_request(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{OPERATION}'


def shard_mission(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/{MISSION}'


def parse_shard_name(name: str) -> tuple[str, str, str] | None:
    """(site, shard, leaf) of a shard name as built here (`/fleet/<site>/<shard>/<leaf>`); None for any other name
    (an agent's, a deeper one such as an action's hidden topics)."""
    parts = name.split('/')
    if len(parts) != 5 or parts[0] or parts[1] != FLEET_ROOT or not all(parts[2:]):
        return None
    return parts[2], parts[3], parts[4]


def orchestrator_namespace(site: str, shard: str) -> str:
    """Namespace of a shard's orchestrator nodes (their lifecycle and parameter services live under it)."""
    return f'/{check_name("site", site)}/{check_name("shard", shard)}'


def orchestrator_node_name(shard: str, role: str = 'orchestrator') -> str:
    return f'{role}_{check_name("shard", shard)}'
