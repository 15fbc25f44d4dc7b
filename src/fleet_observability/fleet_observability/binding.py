"""Where observability servers may bind: loopback by default, anything else only when explicitly allowed."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
