"""Validation of incoming protocol fields; every failure is a ProtocolError the client sees with its request id."""

from __future__ import annotations

import re
from typing import Any

_NAME = re.compile(r'^(/[A-Za-z][A-Za-z0-9_]*)+$')
MAX_NAME_LENGTH = 256
ENCODINGS = ('none', 'cbor')
TOPIC_ENCODINGS = (*ENCODINGS, 'cbor-raw')
"""`compression` of a subscription; `cbor-raw` (rosbridge's: the serialized message, in CBOR) only there."""

Rid = str | int | None
"""A request's `id` as the client gave it (see `request_id`)."""


class ProtocolError(ValueError):
    """A bad request; reported to the client as a `status` error carrying the request id."""


class AuthThrottled(ProtocolError):
    """Raised by a session's `authenticate` callback when the client's address has failed too often: the token is
    not even checked, and the connection is closed (1008)."""


def text(message: dict[str, Any], key: str, *, required: bool = True, default: str = '') -> str:
    value = message.get(key)
    if value is None:
        if required:
            raise ProtocolError(f'missing required field "{key}"')
        return default
    if not isinstance(value, str):
        raise ProtocolError(f'field "{key}" must be a string, got {type(value).__name__}')
    return value


def number(message: dict[str, Any], key: str, default: float, *, minimum: float = 0.0, maximum: float = 1e9) -> float:
    value = message.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f'field "{key}" must be a number, got {type(value).__name__}')
    if not minimum <= value <= maximum:
        raise ProtocolError(f'field "{key}" must be between {minimum:g} and {maximum:g}, got {value!r}')
    return float(value)


def ros_name(message: dict[str, Any], key: str) -> str:
    """A topic or service name, made absolute; relative names are resolved against the root namespace."""
    name = text(message, key)
    if not name.startswith('/'):
        name = '/' + name
    if len(name) > MAX_NAME_LENGTH or not _NAME.match(name):
        raise ProtocolError(
            f'field "{key}": {name[:80]!r} is not a valid ROS name '
            '(segments start with a letter and hold letters, digits and _)'
        )
    return name


def request_id(message: dict[str, Any]) -> str | int | None:
    value = message.get('id')
    if value is None or (isinstance(value, str | int) and not isinstance(value, bool)):
        return value if not isinstance(value, str) else value[:256]
    return str(value)[:256]


def delivery_options(message: dict[str, Any], encodings: tuple[str, ...] = ENCODINGS) -> tuple[int, str]:
    """`fragment_size` (0: never fragment) and `compression` of what the gateway sends back for this request."""
    fragment_size = int(number(message, 'fragment_size', 0, maximum=1e9))
    if fragment_size and fragment_size < 16:
        raise ProtocolError('field "fragment_size" must be at least 16')
    encoding = text(message, 'compression', required=False, default='none')
    if encoding not in encodings:
        raise ProtocolError(f'compression {encoding[:20]!r} is not supported (use one of {", ".join(encodings)})')
    return fragment_size, encoding


def values_of(message: dict[str, Any], key: str) -> Any:
    """A payload field (`args`, `values`): absent, null or an empty list (roslibjs sends [] for an empty request)
    is the all-default message."""
    value = message.get(key)
    return {} if value is None or value == [] else value
