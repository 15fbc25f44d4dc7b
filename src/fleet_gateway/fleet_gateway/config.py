"""Gateway configuration: frozen dataclasses built once from YAML, with errors that name the file and key."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleet_gateway.acl import PROTECTED_TOPICS, AccessPolicy, GlobSet, Principal, Role, RolePolicy, TokenStore
from fleet_gateway.protocol.state import STATUS_LEVELS, SessionLimits

TOKENS_ENV = 'FLEET_GATEWAY_TOKENS'
"""`token:role:name;token:role:name` — the alternative to a tokens file (tokens never live in the repo)."""

QOS_PROFILES = ('command', 'ack', 'events', 'heartbeat', 'telemetry', 'latched', 'operations')


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
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f'{path}: cannot read {what}: {exc.strerror}') from None
    except yaml.YAMLError as exc:
        raise ConfigError(f'{path}: {what} is not valid YAML: {exc}') from None


def _section(source: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(source, key, f'must be a mapping, got {type(value).__name__}')
    return value


def _fill(cls: type, source: str, prefix: str, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        spec = known.get(key)
        if spec is None:
            raise _fail(source, f'{prefix}.{key}', f'unknown key (known: {", ".join(sorted(known))})')
        default = getattr(cls(), key)
        if isinstance(default, bool | str):
            ok = type(value) is type(default)
        elif isinstance(default, int | float):
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        else:
            ok = True
        if not ok:
            raise _fail(source, f'{prefix}.{key}', f'expected {type(default).__name__}, got {value!r}')
        kwargs[key] = (
            type(default)(value) if isinstance(default, int | float) and not isinstance(default, bool) else value
        )
    return cls(**kwargs)


def load_gateway_config(path: Path | str) -> GatewayConfig:
    """Read `fleet_gateway:` from a YAML file; relative paths inside it are resolved against its folder."""
    path = Path(path)
    source = str(path)
    data = _read_yaml(path, 'gateway config')
    root = _section(source, 'fleet_gateway', (data or {}).get('fleet_gateway') if isinstance(data, dict) else data)
    base = path.parent
    known = {
        'host',
        'port',
        'tls',
        'tokens_file',
        'acl_file',
        'anonymous_role',
        'limits',
        'admission',
        'default_qos',
        'topic_qos',
        'call_service_wait_s',
        'ingest_budget_s',
        'ingest_shed_budget_s',
        'receive_buffer_bytes',
        'metrics_port',
        'max_staleness_ms',
        'staleness',
    }
    for key in root:
        if key not in known:
            raise _fail(source, f'fleet_gateway.{key}', f'unknown key (known: {", ".join(sorted(known))})')
    host = root.get('host', '127.0.0.1')
    if not isinstance(host, str) or not host:
        raise _fail(source, 'fleet_gateway.host', 'must be a non-empty string')
    port = root.get('port', 9090)
    if type(port) is not int or not 0 <= port <= 65535:
        raise _fail(source, 'fleet_gateway.port', f'must be an integer 0..65535, got {port!r}')

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
    limits = _fill(SessionLimits, source, 'fleet_gateway.limits', _section(source, 'limits', root.get('limits')))
    if limits.status_level not in STATUS_LEVELS:
        raise _fail(source, 'fleet_gateway.limits.status_level', f'must be one of {", ".join(STATUS_LEVELS)}')
    admission = _fill(
        AdmissionConfig, source, 'fleet_gateway.admission', _section(source, 'admission', root.get('admission'))
    )
    if admission.rate <= 0 or admission.burst < 1 or admission.auth_failure_rate <= 0:
        raise _fail(source, 'fleet_gateway.admission', 'rate and auth_failure_rate must be > 0, burst >= 1')
    if admission.auth_failure_burst < 1:
        raise _fail(source, 'fleet_gateway.admission.auth_failure_burst', 'must be >= 1')
    default_qos = root.get('default_qos', 'events')
    if default_qos not in QOS_PROFILES:
        raise _fail(source, 'fleet_gateway.default_qos', f'must be one of {", ".join(QOS_PROFILES)}')
    topic_qos = []
    for i, item in enumerate(root.get('topic_qos') or []):
        if not isinstance(item, dict) or set(item) != {'glob', 'profile'} or item['profile'] not in QOS_PROFILES:
            raise _fail(
                source, f'fleet_gateway.topic_qos[{i}]', f'must be {{glob, profile}} with a profile in {QOS_PROFILES}'
            )
        topic_qos.append(TopicQos(str(item['glob']), item['profile']))
    wait = root.get('call_service_wait_s', 2.0)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
        raise _fail(source, 'fleet_gateway.call_service_wait_s', 'must be a number >= 0')
    budget = root.get('ingest_budget_s', 0.015)
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget <= 10:
        raise _fail(source, 'fleet_gateway.ingest_budget_s', 'must be a number of seconds in (0, 10]')
    shed = root.get('ingest_shed_budget_s', 0.0075)
    if isinstance(shed, bool) or not isinstance(shed, int | float) or not 0 <= shed <= 10:
        raise _fail(source, 'fleet_gateway.ingest_shed_budget_s', 'must be a number of seconds in [0, 10]')
    metrics_port = root.get('metrics_port', -1)
    if type(metrics_port) is not int or metrics_port > 65535:
        raise _fail(source, 'fleet_gateway.metrics_port', 'must be an integer port (0: any free port, < 0: off)')
    rcvbuf = root.get('receive_buffer_bytes', 32 * 1024)
    if type(rcvbuf) is not int or not 1024 <= rcvbuf <= 16 * 1024 * 1024:
        raise _fail(source, 'fleet_gateway.receive_buffer_bytes', 'must be an integer 1024..16777216')
    max_staleness = root.get('max_staleness_ms', 500.0)
    if isinstance(max_staleness, bool) or not isinstance(max_staleness, int | float) or max_staleness < 0:
        raise _fail(source, 'fleet_gateway.max_staleness_ms', 'must be a number of milliseconds >= 0 (0: off)')
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
        host=host,
        port=port,
        tls=tls,
        tokens_file=opt_path('fleet_gateway.tokens_file', root.get('tokens_file')),
        acl_file=opt_path('fleet_gateway.acl_file', root.get('acl_file')),
        anonymous_role=anonymous,
        limits=limits,
        admission=admission,
        default_qos=default_qos,
        topic_qos=tuple(topic_qos),
        call_service_wait_s=float(wait),
        ingest_budget_s=float(budget),
        ingest_shed_budget_s=float(shed),
        metrics_port=metrics_port,
        receive_buffer_bytes=rcvbuf,
        max_staleness_ms=float(max_staleness),
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
        viewer = RolePolicy(Role.VIEWER, GlobSet(()), GlobSet(['/fleet/**']), GlobSet(()), GlobSet(()), GlobSet(()))
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
