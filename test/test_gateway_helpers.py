"""Shared set-up for the gateway tests: a gateway subprocess on 127.0.0.1 port 0 with throwaway tokens and ACL,
an optional throwaway TLS certificate, a stand-in RunMission action server process, and a small asyncio WebSocket
client. (No tests in this module.)"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.wait import wait_for

ACL = {
    'roles': {
        'operator': {
            'subscribe': ['/**'],
            'publish': ['/**'],
            'call_service': ['/**'],
            'advertise_service': ['/served/**', '/js/served/**', '/py/served/**'],
            'command_publish': ['/fleet/*/*/estop'],
            'send_action_goal': ['/act/**', '/js/act/**', '/py/act/**'],
            'advertise_action': ['/served/**', '/js/served/**', '/py/served/**'],
        },
        # a relay: the gateway refuses its control topics (acks, journal, ...) even under this broad grant
        'site-link': {'subscribe': ['/fleet/*/*/estop'], 'publish': ['/fleet/**', '/*/*/odom']},
        'viewer': {'subscribe': ['/fleet/*/*/status', '/bench/**', '/t/**'], 'call_service': []},
    }
}


@dataclass
class Gateway:
    proc: Any
    port: int
    tokens: dict[str, str]
    scheme: str = 'ws'
    ready: dict[str, Any] | None = None
    """The ready file's JSON (a cluster's: `workers` PIDs, `metrics_port`, ...)."""

    def url(self, role: str = 'operator', path: str = '/') -> str:
        return f'{self.scheme}://127.0.0.1:{self.port}{path}?token={self.tokens[role]}'


WORKERS = 1
"""`--workers` of the gateways `start_gateway` starts unless told otherwise (a test module's fixture may set it)."""
START_S = 30.0
"""Until the ready file, per worker."""


def make_tokens() -> dict[str, str]:
    return {role: secrets.token_urlsafe(24) for role in ('operator', 'site-link', 'viewer')}


def start_gateway(
    processes: Any,
    tmp_path: Path,
    *,
    gateway: dict[str, Any] | None = None,
    tokens: dict[str, str] | None = None,
    port: int = 0,
    tls: tuple[Path, Path] | None = None,
    name: str = 'gateway',
    extra_args: list[str] | None = None,
    workers: int | None = None,
) -> Gateway:
    tokens = tokens or make_tokens()
    (tmp_path / 'acl.yaml').write_text(yaml.safe_dump(ACL))
    token_file = tmp_path / 'tokens.yaml'
    token_file.write_text(
        yaml.safe_dump({'tokens': [{'token': t, 'role': r, 'name': f'test-{r}'} for r, t in tokens.items()]})
    )
    section: dict[str, Any] = {'port': port, 'acl_file': 'acl.yaml', 'tokens_file': 'tokens.yaml'}
    if tls is not None:
        section['tls'] = {'cert': str(tls[0]), 'key': str(tls[1])}
    section.update(gateway or {})
    config = tmp_path / f'{name}.yaml'
    config.write_text(yaml.safe_dump({'fleet_gateway': section}))
    ready = tmp_path / f'{name}.ready'
    ready.unlink(missing_ok=True)
    proc = processes.start(
        [
            sys.executable,
            '-m',
            'fleet_gateway.main',
            '--config',
            str(config),
            '--ready-file',
            str(ready),
            '--workers',
            str(workers or WORKERS),
            *(extra_args or []),
        ],
        name=name,
    )

    def is_ready() -> bool:
        if not proc.alive():
            raise AssertionError(f'gateway exited early:\n{proc.output()}')
        return ready.exists()

    wait_for(is_ready, START_S * (workers or WORKERS), what='gateway ready file')
    info = json.loads(ready.read_text())
    return Gateway(proc, info['port'], tokens, 'wss' if tls else 'ws', info)


MISSION_SERVER = Path(__file__).parent / 'harness' / 'mission_action_server.py'


def start_mission_server(processes: Any, *actions: str) -> Any:
    """The stand-in fleet_interfaces/RunMission server (harness/mission_action_server.py) serving `actions`."""
    proc = processes.start([sys.executable, str(MISSION_SERVER), *actions], name='mission_server')

    def is_ready() -> bool:
        if not proc.alive():
            raise AssertionError(f'mission action server exited early:\n{proc.output()}')
        return 'READY' in proc.output()

    wait_for(is_ready, 20.0, what='mission action server READY')
    return proc


def make_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1/localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'localhost')])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName('localhost'), x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / 'cert.pem'
    key_path = tmp_path / 'key.pem'
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
