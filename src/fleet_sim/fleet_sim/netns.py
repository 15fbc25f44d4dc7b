"""Hosts made of Linux network namespaces for chaos tests: a central namespace with a bridge, robot-host namespaces
each joined to it by a veth pair, and the environment that lets DDS discover across them without multicast
(ROS_STATIC_PEERS with discovery range LOCALHOST; UDP only, so every byte crosses the veth links and a cut link
really cuts). Needs root (CAP_NET_ADMIN). Everything created is removed by `destroy()`, also after partial set-up."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class NetnsError(RuntimeError):
    """A namespace or link could not be created or changed; the message carries the failing command."""


def _ip(*args: str) -> None:
    result = subprocess.run(['ip', *args], capture_output=True, text=True, timeout=10, check=False)
    if result.returncode != 0:
        raise NetnsError(f'ip {" ".join(args)}: {result.stderr.strip() or result.returncode}')


def can_create_namespaces() -> str:
    """Empty when this process can create network namespaces, else the reason it cannot."""
    if os.geteuid() != 0:
        return 'network namespaces need root (CAP_NET_ADMIN); run the chaos tests as root, as CI does'
    if subprocess.run(['which', 'ip'], capture_output=True, check=False).returncode != 0:
        return 'the ip tool (iproute2) is missing; run scripts/system-deps.sh'
    return ''


@dataclass
class NetnsTopology:
    """`central` + one namespace per robot host, on subnet 10.<octet>.0.0/24."""

    tag: str
    robot_hosts: Sequence[str]
    octet: int
    namespaces: list[str] = field(default_factory=list)

    @property
    def central(self) -> str:
        return f'{self.tag}-c'

    def ns(self, host: str) -> str:
        return f'{self.tag}-{host}'

    def address(self, host: str) -> str:
        if host == 'central':
            return f'10.{self.octet}.0.1'
        return f'10.{self.octet}.0.{10 + list(self.robot_hosts).index(host)}'

    def link(self, host: str) -> str:
        """The robot-side interface of `host`."""
        return f'vr{list(self.robot_hosts).index(host)}'

    def create(self) -> NetnsTopology:
        try:
            for name in [self.central] + [self.ns(h) for h in self.robot_hosts]:
                _ip('netns', 'add', name)
                self.namespaces.append(name)
                _ip('-n', name, 'link', 'set', 'lo', 'up')
            _ip('-n', self.central, 'link', 'add', 'br0', 'type', 'bridge')
            _ip('-n', self.central, 'addr', 'add', f'{self.address("central")}/24', 'dev', 'br0')
            _ip('-n', self.central, 'link', 'set', 'br0', 'up')
            for index, host in enumerate(self.robot_hosts):
                central_end, robot_end = f'vc{index}', self.link(host)
                _ip('-n', self.central, 'link', 'add', central_end, 'type', 'veth', 'peer', 'name', robot_end,
                    'netns', self.ns(host))  # fmt: skip
                _ip('-n', self.central, 'link', 'set', central_end, 'master', 'br0')
                _ip('-n', self.central, 'link', 'set', central_end, 'up')
                _ip('-n', self.ns(host), 'addr', 'add', f'{self.address(host)}/24', 'dev', robot_end)
                _ip('-n', self.ns(host), 'link', 'set', robot_end, 'up')
        except NetnsError:
            self.destroy()
            raise
        return self

    def set_link(self, host: str, up: bool) -> None:
        """Cut (down) or restore (up) the robot host's only link to the rest of the network."""
        _ip('-n', self.ns(host), 'link', 'set', self.link(host), 'up' if up else 'down')

    def set_drop(self, host: str, direction: str, drop: bool) -> None:
        """A one-way cut: drop every packet to (`direction='in'`) or from (`'out'`) the robot host, or stop dropping.
        A blackhole qdisc on the sending end of the veth pair (tc netem is not available on every kernel)."""
        if direction not in ('in', 'out'):
            raise NetnsError(f'direction must be in or out, got {direction!r}')
        index = list(self.robot_hosts).index(host)
        ns, dev = (self.central, f'vc{index}') if direction == 'in' else (self.ns(host), self.link(host))
        args = ['qdisc', 'replace', 'dev', dev, 'root', 'blackhole'] if drop else ['qdisc', 'del', 'dev', dev, 'root']
        result = subprocess.run(['tc', '-n', ns, *args], capture_output=True, text=True, timeout=10, check=False)
        if result.returncode != 0 and drop:
            raise NetnsError(f'tc -n {ns} {" ".join(args)}: {result.stderr.strip() or result.returncode}')

    def env(self, base: Mapping[str, str], domain_id: int) -> dict[str, str]:
        peers = ';'.join(self.address(h) for h in ['central', *self.robot_hosts])
        env = dict(base)
        env.update(
            {
                'ROS_DOMAIN_ID': str(domain_id),
                'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',  # no multicast anywhere
                'ROS_STATIC_PEERS': peers,  # unicast discovery of the other namespaces, over the veth links
                'FASTDDS_BUILTIN_TRANSPORTS': 'UDPv4',  # no shared memory: namespaces share /dev/shm
                'PYTHONUNBUFFERED': '1',
            }
        )
        return env

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """argv run inside `host`'s namespace ('central' or a robot host); `ip netns exec` execs, keeping the PID."""
        ns = self.central if host == 'central' else self.ns(host)
        return ['ip', 'netns', 'exec', ns, *argv]

    def destroy(self) -> list[str]:
        """Delete every namespace this topology created (their veths and bridge go with them); returns errors."""
        errors = []
        for name in reversed(self.namespaces):
            try:
                _ip('netns', 'delete', name)
            except NetnsError as exc:
                errors.append(str(exc))
        self.namespaces.clear()
        return errors
