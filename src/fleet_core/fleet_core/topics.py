"""The one place fleet topic, service and action names are built (documented in fleet_interfaces/README.md)."""

from __future__ import annotations

import re

_NAME = re.compile(r'^[A-Za-z][A-Za-z0-9_]*$')


class InvalidName(ValueError):
    """A site, shard or agent id that cannot be used as a ROS name token."""


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise InvalidName(f'{kind} {value!r} must start with a letter and contain only letters, digits and _')
    return value


def agent_namespace(site: str, agent: str) -> str:
    return f'/{check_name("site", site)}/{check_name("agent", agent)}'


def agent_command(site: str, agent: str) -> str:
    return f'{agent_namespace(site, agent)}/command'


def agent_odom(site: str, agent: str) -> str:
    return f'{agent_namespace(site, agent)}/odom'


def shard_prefix(site: str, shard: str) -> str:
    return f'/fleet/{check_name("site", site)}/{check_name("shard", shard)}'


def shard_ack(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/ack'


def shard_heartbeat(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/heartbeat'


def shard_status(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/status'


def shard_outcome(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/outcome'


def shard_journal(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/journal'


def shard_submissions(site: str, shard: str) -> str:
    """Accepted submissions (request ids) replicated from the leader to its standbys."""
    return f'{shard_prefix(site, shard)}/submissions'


def shard_handoff(site: str, shard: str) -> str:
    """Unfinished commands a stepped-down leader hands to whoever leads next."""
    return f'{shard_prefix(site, shard)}/handoff'


def shard_handoff_outcomes(site: str, shard: str) -> str:
    """Outcomes a replica decided or followed (within retention), handed to a new leader with its unfinished work:
    the new leader settles any command it adopted that another replica already decided (the first decision wins)."""
    return f'{shard_prefix(site, shard)}/handoff_outcomes'


def shard_outcomes_query(site: str, shard: str) -> str:
    """GetOutcomes service of the leader (fates by command id from its journal)."""
    return f'{shard_prefix(site, shard)}/outcomes'


def shard_state(site: str, shard: str) -> str:
    """GetShardState service of the leader (e-stop, pause, unfinished work)."""
    return f'{shard_prefix(site, shard)}/state'


def shard_trace(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/trace'


def shard_task_events(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/task_events'


def shard_mission_journal(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/mission_journal'


def shard_mission_status(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/mission_status'


def shard_mission_cancel(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/mission_cancel'


def shard_leader(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/leader'


def shard_estop(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/estop'


def shard_operations(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/operations'


def shard_submit(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/submit'


def shard_set_estop(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/set_estop'


def shard_operation_request(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/operation'


def shard_mission(site: str, shard: str) -> str:
    return f'{shard_prefix(site, shard)}/mission'


def orchestrator_node_name(shard: str, role: str = 'orchestrator') -> str:
    return f'{role}_{check_name("shard", shard)}'
