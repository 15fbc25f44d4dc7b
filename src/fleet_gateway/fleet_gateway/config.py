"""Gateway configuration: frozen dataclasses built once from YAML, with errors that name the file and key."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_core import topics, yaml_config
from fleet_gateway.acl import PROTECTED_TOPICS, AccessPolicy, GlobSet, Principal, Role, RolePolicy, TokenStore
from fleet_gateway.protocol.state import STATUS_LEVELS, SessionLimits
from fleet_ros import qos as fleet_qos

TOKENS_ENV = 'FLEET_GATEWAY_TOKENS'
"""`token:role:name;token:role:name` — the alternative to a tokens file (tokens never live in the repo)."""

QOS_PROFILES: tuple[str, ...] = tuple(fleet_qos.PROFILES)
"""Profile names a config may choose: the named profiles of `fleet_ros.qos`, the one place they are defined."""


class ConfigError(ValueError):
    """An invalid gateway, ACL or token file; the message names the file and the key."""


@dataclass(frozen=True)
class TlsConfig:
    cert: Path
    key: Path


@dataclass(frozen=True)
class AdmissionConfig:
    """Token bucket on new sessions: `rate` per second, `burst` at once; beyond it, clients are told to retry."""

    rate: float = 400.0
    burst: float = 600.0
    max_clients: int = 2_000
    """Authenticated sessions (a token at the handshake, an anonymous role, or a successful `auth` op)."""
    max_unauthenticated: int = 64
    """Sessions waiting for their `auth` op, a pool of their own outside `max_clients` (each waits at most
    `limits.auth_timeout_s`), so idle connections that never authenticate cannot lock operators out."""
    auth_failure_rate: float = 1.0
    auth_failure_burst: float = 10.0
    """Failed authentications allowed per source address: `auth_failure_burst` at once, then `auth_failure_rate`
    per second; beyond, that address gets HTTP 429 (handshake) or a 1008 close (`auth` op) without a token check."""


@dataclass(frozen=True)
class TopicQos:
    glob: str
    profile: str


@dataclass(frozen=True)
class StalenessRule:
    """Telemetry frames of topics matching `glob` older than `max_ms` are dropped, never sent (0: never stale)."""

    glob: str
    max_ms: float


@dataclass(frozen=True)
class GatewayConfig:
    host: str = '127.0.0.1'
    port: int = 9090
    tls: TlsConfig | None = None
    tokens_file: Path | None = None
    acl_file: Path | None = None
    anonymous_role: Role | None = None
    limits: SessionLimits = field(default_factory=SessionLimits)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    default_qos: str = 'events'
    topic_qos: tuple[TopicQos, ...] = ()
    call_service_wait_s: float = 2.0
    ingest_budget_s: float = 0.015
    """Time per event-loop turn for incoming messages; beyond it, reading pauses until the next turn."""
    ingest_shed_budget_s: float = 0.0075
    """Time per event-loop turn, after `ingest_budget_s`, for dropping best-effort publishes unparsed (shedding)
    instead of pausing their sockets; 0 turns shedding off (pure pushback)."""
    metrics_port: int = -1
    """Prometheus /metrics on 127.0.0.1 (0: any free port, in the ready file; < 0: no metrics)."""
    receive_buffer_bytes: int = 32 * 1024
    """SO_RCVBUF of the listening socket, inherited by every client socket (so it also sizes the TCP window). Under
    pushback it bounds what a client has waiting in the gateway's kernel buffer; over a link with round-trip time
    RTT it also caps one connection's ingest at about this many bytes per RTT (32 KiB at 50 ms: ~640 KB/s)."""
    max_staleness_ms: float = 500.0
    """Outgoing frames of best-effort (telemetry) subscriptions older than this are dropped, never sent, counted and
    reported to the client (0: off). Critical topics are never dropped; reliable ones only by a `staleness` rule."""
    staleness: tuple[StalenessRule, ...] = ()
    """Per-topic bounds (first matching glob wins), for any non-critical topic, reliable ones included."""
    source: str = '<defaults>'


def _fail(source: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f'{source}: {key}: {problem}')


def _read_yaml(path: Path, what: str) -> Any:
    return yaml_config.read_yaml(path, what, ConfigError)


def _section(source: str, key: str, value: Any) -> Mapping[str, Any]:
    return yaml_config.mapping(value, source, key, ConfigError)


def _number_in(low: float, high: float, *, open_low: bool = False) -> Callable[[Any], bool]:
    return lambda v: (low < v if open_low else low <= v) and v <= high


_ROOT_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    'host': (bool, 'must be a non-empty string'),
    'port': (_number_in(0, 65535), 'must be an integer 0..65535'),
    'default_qos': (lambda v: v in QOS_PROFILES, f'must be one of {", ".join(QOS_PROFILES)}'),
    'call_service_wait_s': (_number_in(0, math.inf), 'must be a number >= 0'),
    'ingest_budget_s': (_number_in(0, 10, open_low=True), 'must be a number of seconds in (0, 10]'),
    'ingest_shed_budget_s': (_number_in(0, 10), 'must be a number of seconds in [0, 10]'),
    'metrics_port': (lambda v: v <= 65535, 'must be an integer port (0: any free port, < 0: off)'),
    'receive_buffer_bytes': (_number_in(1024, 16 * 1024 * 1024), 'must be an integer 1024..16777216'),
    'max_staleness_ms': (_number_in(0, math.inf), 'must be a number of milliseconds >= 0 (0: off)'),
}
"""The scalar keys of `fleet_gateway:` (typed like GatewayConfig's defaults) and their ranges."""


def _check_root(key: str, value: Any) -> str | None:
    accept, problem = _ROOT_RULES[key]
    return None if accept(value) else f'{problem}, got {value!r}'


def load_gateway_config(path: Path | str) -> GatewayConfig:
    """Read `fleet_gateway:` from a YAML file; relative paths inside it are resolved against its folder."""
    path = Path(path)
    source = str(path)
    data = _read_yaml(path, 'gateway config')
    root = _section(source, 'fleet_gateway', (data or {}).get('fleet_gateway') if isinstance(data, dict) else data)
    base = path.parent
    known = {f.name for f in dataclasses.fields(GatewayConfig)} - {'source'}
    yaml_config.check_keys(root, known, source, 'fleet_gateway', ConfigError)
    scalars = yaml_config.typed_values(
        GatewayConfig(),
        {key: value for key, value in root.items() if key in _ROOT_RULES},
        source,
        'fleet_gateway',
        ConfigError,
        validate=_check_root,
    )

    def opt_path(key: str, value: Any) -> Path | None:
        if value in (None, ''):
            return None
        if not isinstance(value, str):
            raise _fail(source, key, 'must be a path string')
        return (base / value).resolve()

    tls = None
    tls_section = _section(source, 'fleet_gateway.tls', root.get('tls'))
    tls_cert = opt_path('fleet_gateway.tls.cert', tls_section.get('cert'))
    tls_key = opt_path('fleet_gateway.tls.key', tls_section.get('key'))
    if (tls_cert is None) != (tls_key is None):
        raise _fail(source, 'fleet_gateway.tls', 'set both cert and key, or neither')
    if tls_cert is not None and tls_key is not None:
        tls = TlsConfig(tls_cert, tls_key)
    anonymous = root.get('anonymous_role') or None
    if anonymous is not None:
        try:
            anonymous = Role(anonymous)
        except ValueError:
            raise _fail(source, 'fleet_gateway.anonymous_role', f'unknown role {anonymous!r}') from None
    limits = yaml_config.build(
        SessionLimits,
        root.get('limits'),
        source,
        'fleet_gateway.limits',
        ConfigError,
        validate=yaml_config.non_negative,
    )
    if limits.status_level not in STATUS_LEVELS:
        raise _fail(source, 'fleet_gateway.limits.status_level', f'must be one of {", ".join(STATUS_LEVELS)}')
    admission = yaml_config.build(
        AdmissionConfig,
        root.get('admission'),
        source,
        'fleet_gateway.admission',
        ConfigError,
        validate=yaml_config.non_negative,
    )
    if admission.rate <= 0 or admission.burst < 1 or admission.auth_failure_rate <= 0:
        raise _fail(source, 'fleet_gateway.admission', 'rate and auth_failure_rate must be > 0, burst >= 1')
    if admission.auth_failure_burst < 1:
        raise _fail(source, 'fleet_gateway.admission.auth_failure_burst', 'must be >= 1')
    topic_qos = []
    for i, item in enumerate(root.get('topic_qos') or []):
        if not isinstance(item, dict) or set(item) != {'glob', 'profile'} or item['profile'] not in QOS_PROFILES:
            raise _fail(
                source, f'fleet_gateway.topic_qos[{i}]', f'must be {{glob, profile}} with a profile in {QOS_PROFILES}'
            )
        topic_qos.append(TopicQos(str(item['glob']), item['profile']))
    staleness = []
    for i, item in enumerate(root.get('staleness') or []):
        max_ms = item.get('max_ms') if isinstance(item, dict) else None
        if (
            not isinstance(item, dict)
            or set(item) != {'glob', 'max_ms'}
            or not isinstance(item['glob'], str)
            or isinstance(max_ms, bool)
            or not isinstance(max_ms, int | float)
            or max_ms < 0
        ):
            raise _fail(source, f'fleet_gateway.staleness[{i}]', 'must be {glob, max_ms} with max_ms >= 0')
        staleness.append(StalenessRule(item['glob'], float(max_ms)))
    return GatewayConfig(
        **scalars,
        tls=tls,
        tokens_file=opt_path('fleet_gateway.tokens_file', root.get('tokens_file')),
        acl_file=opt_path('fleet_gateway.acl_file', root.get('acl_file')),
        anonymous_role=anonymous,
        limits=limits,
        admission=admission,
        topic_qos=tuple(topic_qos),
        staleness=tuple(staleness),
        source=source,
    )


_ACL_KEYS = (
    'publish',
    'subscribe',
    'call_service',
    'advertise_service',
    'command_publish',
    'send_action_goal',
    'advertise_action',
)


def _globs(source: str, key: str, value: Any) -> GlobSet:
    if value is None:
        return GlobSet(())
    if not isinstance(value, list) or not all(isinstance(v, str) and v.startswith('/') for v in value):
        raise _fail(source, key, 'must be a list of absolute glob strings such as "/fleet/**"')
    return GlobSet(value)


def load_acl(path: Path | str | None) -> AccessPolicy:
    """Per-role allow-lists. Without a file every role may only subscribe to `/fleet/**` (viewer-like)."""
    if path is None:
        fleet_names = GlobSet([topics.FLEET_GLOB])
        viewer = RolePolicy(Role.VIEWER, GlobSet(()), fleet_names, GlobSet(()), GlobSet(()), GlobSet(()))
        return AccessPolicy(
            {r: dataclasses.replace(viewer, role=r) for r in Role}, GlobSet(PROTECTED_TOPICS), GlobSet(PROTECTED_TOPICS)
        )
    source = str(path)
    data = _section(source, '<root>', _read_yaml(Path(path), 'ACL file'))
    for key in data:
        if key not in ('roles', 'protected_topics', 'critical_topics'):
            raise _fail(source, key, 'unknown key (known: roles, protected_topics, critical_topics)')
    protected = _globs(source, 'protected_topics', data.get('protected_topics', list(PROTECTED_TOPICS)))
    critical = _globs(source, 'critical_topics', data.get('critical_topics', list(protected.patterns)))
    roles: dict[Role, RolePolicy] = {}
    for name, spec in _section(source, 'roles', data.get('roles')).items():
        try:
            role = Role(name)
        except ValueError:
            raise _fail(source, f'roles.{name}', f'unknown role (known: {", ".join(r.value for r in Role)})') from None
        grants = _section(source, f'roles.{name}', spec)
        for key in grants:
            if key not in _ACL_KEYS:
                raise _fail(source, f'roles.{name}.{key}', f'unknown key (known: {", ".join(_ACL_KEYS)})')
        lists = {key: _globs(source, f'roles.{name}.{key}', grants.get(key)) for key in _ACL_KEYS}
        roles[role] = RolePolicy(role=role, **lists)
    return AccessPolicy(roles, protected, critical)


def _principal(source: str, key: str, role: Any, name: Any) -> Principal:
    try:
        parsed = Role(role)
    except ValueError:
        raise _fail(source, key, f'unknown role {role!r} (known: {", ".join(r.value for r in Role)})') from None
    if not isinstance(name, str) or not name:
        raise _fail(source, key, 'needs a non-empty name')
    return Principal(name, parsed)


def load_tokens(path: Path | None, env: dict[str, str] | None = None) -> TokenStore:
    """Tokens from a YAML file (`tokens: [{token, role, name}]`) and/or the FLEET_GATEWAY_TOKENS variable."""
    tokens: dict[str, Principal] = {}
    if path is not None:
        source = str(path)
        data = _section(source, '<root>', _read_yaml(path, 'tokens file'))
        for i, item in enumerate(data.get('tokens') or []):
            key = f'tokens[{i}]'
            if not isinstance(item, dict) or not isinstance(item.get('token'), str) or len(item['token']) < 16:
                raise _fail(source, key, 'needs a "token" string of at least 16 characters')
            tokens[item['token']] = _principal(source, key, item.get('role'), item.get('name'))
    raw = (env if env is not None else os.environ).get(TOKENS_ENV, '')
    for i, entry in enumerate(filter(None, raw.split(';'))):
        parts = entry.split(':', 2)
        if len(parts) != 3 or len(parts[0]) < 16:
            raise ConfigError(f'${TOKENS_ENV}: entry {i}: expected "token:role:name" with a token of >= 16 characters')
        tokens[parts[0]] = _principal(f'${TOKENS_ENV}', f'entry {i}', parts[1], parts[2])
    return TokenStore(tokens)
