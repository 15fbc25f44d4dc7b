"""JSON <-> ROS 2 message conversion by introspection of the generated message classes.

Follows the rosbridge v2 conventions: nested messages are JSON objects, arrays are lists, `uint8[]`/`byte[]`
(fixed or sequence) are base64 strings on the way out and base64 strings or integer lists on the way in,
non-finite floats become `null`, and fields missing from the JSON keep their message defaults.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import math
import re
import struct
from collections.abc import Callable
from typing import Any

import rosidl_parser.definition as idl

_TYPE_NAME = re.compile(r'^([A-Za-z][A-Za-z0-9_]*)/(?:(msg|srv|action)/)?([A-Za-z][A-Za-z0-9_]*)$')

_INT_RANGES = {
    'int8': (-(2**7), 2**7 - 1),
    'uint8': (0, 2**8 - 1),
    'int16': (-(2**15), 2**15 - 1),
    'uint16': (0, 2**16 - 1),
    'int32': (-(2**31), 2**31 - 1),
    'uint32': (0, 2**32 - 1),
    'int64': (-(2**63), 2**63 - 1),
    'uint64': (0, 2**64 - 1),
    'char': (0, 2**8 - 1),
    'short': (-(2**15), 2**15 - 1),
    'unsigned short': (0, 2**16 - 1),
    'long': (-(2**31), 2**31 - 1),
    'unsigned long': (0, 2**32 - 1),
    'long long': (-(2**63), 2**63 - 1),
    'unsigned long long': (0, 2**64 - 1),
}
_FLOATS = frozenset({'float', 'double', 'long double', 'float32', 'float64'})
_BYTE_LIKE = frozenset({'uint8', 'octet', 'char'})
MAX_DEPTH = 32


class ConversionError(ValueError):
    """A JSON value does not fit the ROS field it was given for; the message names the field path."""


class UnknownType(LookupError):
    """A message, service or action type name that is malformed or not installed."""


def _split_type(name: object, kind: str) -> tuple[str, str]:
    if not isinstance(name, str):
        raise UnknownType(f'{kind} type must be a string like "pkg/{kind}/Type", got {type(name).__name__}')
    match = _TYPE_NAME.match(name)
    if match is None:
        raise UnknownType(f'{kind} type {name!r} is not of the form "pkg/Type" or "pkg/{kind}/Type"')
    package, sub, short = match.groups()
    if sub is not None and sub != kind:
        article = 'an' if kind == 'action' else 'a'
        raise UnknownType(f'{kind} type {name!r} names a {sub} type, not {article} {kind} type')
    return package, short


_CLASS_CACHE: dict[tuple[str, str], type] = {}


def _import(package: str, kind: str, short: str, original: str) -> type:
    key = (f'{package}.{kind}', short)
    cached = _CLASS_CACHE.get(key)
    if cached is not None:
        return cached
    try:
        module = importlib.import_module(f'{package}.{kind}')
    except ImportError as exc:
        raise UnknownType(f'{kind} type {original!r}: package {package!r} is not installed ({exc})') from None
    cls = getattr(module, short, None)
    if not isinstance(cls, type):
        raise UnknownType(f'{kind} type {original!r}: {package}/{kind} has no type {short!r}')
    _CLASS_CACHE[key] = cls
    return cls


def message_class(name: object) -> type:
    """The generated class of a message type given as "pkg/Type" or "pkg/msg/Type"."""
    package, short = _split_type(name, 'msg')
    cls = _import(package, 'msg', short, str(name))
    if not hasattr(cls, 'get_fields_and_field_types'):
        raise UnknownType(f'msg type {name!r} is not a message class')
    return cls


def service_class(name: object) -> type:
    """The generated class of a service type given as "pkg/Type" or "pkg/srv/Type"."""
    package, short = _split_type(name, 'srv')
    cls = _import(package, 'srv', short, str(name))
    if not hasattr(cls, 'Request') or not hasattr(cls, 'Response'):
        raise UnknownType(f'srv type {name!r} is not a service class')
    return cls


def action_class(name: object) -> type:
    """The generated class of an action type given as "pkg/Type" or "pkg/action/Type"."""
    package, short = _split_type(name, 'action')
    cls = _import(package, 'action', short, str(name))
    if not all(hasattr(cls, part) for part in ('Goal', 'Result', 'Feedback', 'Impl')):
        raise UnknownType(f'action type {name!r} is not an action class')
    return cls


def type_name(cls: type) -> str:
    """ "pkg/msg/Type" for a generated message class."""
    module = cls.__module__.split('.')
    return f'{module[0]}/{module[1]}/{cls.__name__}'


# --- ROS -> JSON -------------------------------------------------------------------------------------------

ToJson = Callable[[Any], Any]


def _float_out(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _bytes_out(value: Any) -> str:
    if isinstance(value, list):  # octet sequences are lists of 1-byte bytes objects
        value = b''.join(value)
    return base64.b64encode(bytes(value)).decode('ascii')


def _octet_out(value: bytes) -> int:
    return value[0] if isinstance(value, bytes) else int(value)


def _scalar_out(slot: Any) -> ToJson | None:
    if isinstance(slot, idl.BasicType):
        if slot.typename in _FLOATS:
            return _float_out
        if slot.typename == 'octet':
            return _octet_out
        return None
    if isinstance(slot, idl.AbstractGenericString):
        return None
    if isinstance(slot, idl.NamespacedType):
        return _codec_for_slot(slot).to_json
    raise UnknownType(f'unsupported field type {slot!r}')


def _field_out(slot: Any) -> ToJson | None:
    if isinstance(slot, idl.AbstractNestedType):
        value_type = slot.value_type
        if isinstance(value_type, idl.BasicType) and value_type.typename in _BYTE_LIKE:
            return _bytes_out
        inner = _scalar_out(value_type)
        if inner is None:
            return _plain_list
        return lambda seq: [inner(item) for item in seq]
    return _scalar_out(slot)


def _plain_list(seq: Any) -> list[Any]:
    return seq.tolist() if hasattr(seq, 'tolist') else list(seq)


# --- JSON -> ROS -------------------------------------------------------------------------------------------

FromJson = Callable[[Any, str, int], Any]


def _int_in(typename: str) -> FromJson:
    low, high = _INT_RANGES[typename]

    def convert(value: Any, path: str, depth: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConversionError(f'{path}: expected an integer ({typename}), got {_kind(value)}')
        if not low <= value <= high:
            raise ConversionError(f'{path}: {value} is out of range for {typename} [{low}, {high}]')
        return int(value)

    return convert


def _float_in(value: Any, path: str, depth: int) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConversionError(f'{path}: expected a number, got {_kind(value)}')
    return float(value)


def _bool_in(value: Any, path: str, depth: int) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConversionError(f'{path}: expected a boolean, got {_kind(value)}')


def _octet_in(value: Any, path: str, depth: int) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ConversionError(f'{path}: expected a byte (integer 0..255), got {_kind(value)}')
    return bytes((value,))


def _string_in(bound: int | None) -> FromJson:
    def convert(value: Any, path: str, depth: int) -> str:
        if not isinstance(value, str):
            raise ConversionError(f'{path}: expected a string, got {_kind(value)}')
        if bound is not None and len(value) > bound:
            raise ConversionError(f'{path}: string longer than its bound of {bound} characters')
        return value

    return convert


def _scalar_in(slot: Any) -> FromJson:
    if isinstance(slot, idl.BasicType):
        name = slot.typename
        if name == 'boolean':
            return _bool_in
        if name in _FLOATS:
            return _float_in
        if name == 'octet':
            return _octet_in
        if name in _INT_RANGES:
            return _int_in(name)
        raise UnknownType(f'unsupported basic type {name!r}')
    if isinstance(slot, idl.AbstractGenericString):
        return _string_in(slot.maximum_size if slot.has_maximum_size() else None)
    if isinstance(slot, idl.NamespacedType):
        codec = _codec_for_slot(slot)
        return codec.from_json_at
    raise UnknownType(f'unsupported field type {slot!r}')


def _bytes_in(value: Any, path: str) -> bytes:
    if isinstance(value, bytes | bytearray):  # a CBOR byte string (binary frames)
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ConversionError(f'{path}: expected base64 text or a list of bytes') from None
    if isinstance(value, list):
        if not all(type(item) is int and 0 <= item <= 255 for item in value):
            raise ConversionError(f'{path}: a byte list must hold integers 0..255')
        return bytes(value)
    raise ConversionError(f'{path}: expected base64 text or a list of bytes, got {_kind(value)}')


def _nested_in(slot: Any) -> FromJson:
    value_type = slot.value_type
    fixed = slot.size if isinstance(slot, idl.Array) else None
    bound = slot.maximum_size if isinstance(slot, idl.BoundedSequence) else None
    bytes_like = isinstance(value_type, idl.BasicType) and value_type.typename in _BYTE_LIKE
    octet = bytes_like and value_type.typename == 'octet'
    inner = _scalar_in(value_type)

    def convert(value: Any, path: str, depth: int) -> Any:
        if bytes_like:
            raw = _bytes_in(value, path)
            count = len(raw)
        else:
            if not isinstance(value, list):
                raise ConversionError(f'{path}: expected a list, got {_kind(value)}')
            count = len(value)
        if fixed is not None and count != fixed:
            raise ConversionError(f'{path}: expected exactly {fixed} elements, got {count}')
        if bound is not None and count > bound:
            raise ConversionError(f'{path}: at most {bound} elements allowed, got {count}')
        if bytes_like:
            return [raw[i : i + 1] for i in range(count)] if octet else list(raw)
        return [inner(item, f'{path}[{i}]', depth + 1) for i, item in enumerate(value)]

    return convert


def _field_in(slot: Any) -> FromJson:
    if isinstance(slot, idl.AbstractNestedType):
        return _nested_in(slot)
    return _scalar_in(slot)


def _kind(value: Any) -> str:
    return 'null' if value is None else type(value).__name__


# --- JSON -> CDR bytes for flat messages (the publish fast path) ------------------------------------------
# A message whose fields are all booleans, integers, float32/float64 or strings is serialized straight from JSON
# into the CDR bytes rmw_fastrtps publishes (classic little-endian CDR, encapsulation 00 01 00 00, each value
# aligned to its size relative to the payload, strings as uint32 length incl. NUL + UTF-8 + NUL), skipping the
# generated class and rclpy's Python -> C conversion. Only values the generic path accepts unchanged are taken
# (exact JSON types, in range, finite, strings without NUL); anything else returns None and the caller falls back
# to `from_json`, which converts or reports the error. test_gateway_protocol checks the bytes against
# rclpy.serialization.serialize_message.

_CDR_HEADER = b'\x00\x01\x00\x00'
_CDR_SCALARS = {
    'boolean': ('?', 1),
    'int8': ('b', 1),
    'uint8': ('B', 1),
    'int16': ('h', 2),
    'uint16': ('H', 2),
    'int32': ('i', 4),
    'uint32': ('I', 4),
    'int64': ('q', 8),
    'uint64': ('Q', 8),
    'float': ('f', 4),
    'double': ('d', 8),
}
_FLOAT32_MAX = 3.4028234663852886e38
_FLOAT64_MAX = 1.7976931348623157e308
_MISSING = object()
_pack_len = struct.Struct('<I').pack
ToWire = Callable[[Any], bytes | None]


def _wire_value(typename: str | None, bound: int | None, value: Any) -> bytes | None:
    """The CDR bytes of one scalar (unaligned), or None when the generic path must decide."""
    if typename is None:  # string
        if type(value) is not str or '\x00' in value or (bound is not None and len(value) > bound):
            return None
        try:
            data = value.encode('utf-8')
        except UnicodeEncodeError:
            return None
        return _pack_len(len(data) + 1) + data + b'\x00'
    if typename == 'boolean':
        return b'\x01' if value is True else b'\x00' if value is False else None
    kind = type(value)
    if typename in ('float', 'double'):
        if kind is not float and kind is not int:
            return None
        limit = _FLOAT32_MAX if typename == 'float' else _FLOAT64_MAX
        try:
            number = float(value)
        except OverflowError:
            return None
        if not -limit <= number <= limit:  # also false for NaN
            return None
        return struct.pack('<f' if typename == 'float' else '<d', number)
    if kind is not int:
        return None
    low, high = _INT_RANGES[typename]
    if not low <= value <= high:
        return None
    return struct.pack('<' + _CDR_SCALARS[typename][0], value)


def _wire_encoder(cls: type) -> ToWire | None:
    """A JSON -> CDR encoder for a flat message class, or None when the class is not flat."""
    fields = list(cls.get_fields_and_field_types())  # type: ignore[attr-defined]  # rosidl message classes (typed `type`) define it at import
    if not fields:
        return None  # empty messages carry a hidden placeholder byte; leave them to rclpy
    spec: list[tuple[str, str | None, int | None, int, bytes]] = []
    defaults = cls()
    for field, slot in zip(fields, cls.SLOT_TYPES, strict=True):  # type: ignore[attr-defined]  # rosidl message classes (typed `type`) define it at import
        if isinstance(slot, idl.BasicType) and slot.typename in _CDR_SCALARS:
            typename: str | None = slot.typename
            bound = None
            align = _CDR_SCALARS[slot.typename][1]
        elif isinstance(slot, idl.UnboundedString | idl.BoundedString):
            typename = None
            bound = slot.maximum_size if isinstance(slot, idl.BoundedString) else None
            align = 4
        else:
            return None
        default = _wire_value(typename, bound, getattr(defaults, field))
        if default is None:
            return None
        spec.append((field, typename, bound, align, default))
    names = frozenset(fields)
    if len(spec) == 1 and spec[0][1] is None and spec[0][2] is None:  # std_msgs/String and the like
        (only, _t, _b, _a, only_default) = spec[0]

        def encode_one_string(value: Any) -> bytes | None:
            if type(value) is not dict or len(value) > 1:
                return None
            text = value.get(only, _MISSING)
            if text is _MISSING:
                return None if value else _CDR_HEADER + only_default
            if type(text) is not str or '\x00' in text:
                return None
            try:
                data = text.encode('utf-8')
            except UnicodeEncodeError:
                return None
            return _CDR_HEADER + _pack_len(len(data) + 1) + data + b'\x00'

        return encode_one_string

    def encode(value: Any) -> bytes | None:
        if type(value) is not dict or not names.issuperset(value):
            return None
        parts = [_CDR_HEADER]
        offset = 0
        for field, typename, bound, align, default in spec:
            item = value.get(field, _MISSING)
            data = default if item is _MISSING else _wire_value(typename, bound, item)
            if data is None:
                return None
            pad = -offset % align
            if pad:
                parts.append(bytes(pad))
                offset += pad
            parts.append(data)
            offset += len(data)
        return b''.join(parts)

    return encode


# --- codecs ------------------------------------------------------------------------------------------------


class MessageCodec:
    """Converts one generated message class to and from JSON-compatible values; build with `codec_for`."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.name = type_name(cls)
        self._out: list[tuple[str, ToJson | None]] = []
        self._in: dict[str, FromJson] = {}
        self._time_like = self.name in ('builtin_interfaces/msg/Time', 'builtin_interfaces/msg/Duration')
        self._wire: ToWire | None = None
        self._wire_built = False

    def _build(self) -> None:
        fields = list(self.cls.get_fields_and_field_types())  # type: ignore[attr-defined]  # rosidl message classes (typed `type`) define it at import
        for field, slot in zip(fields, self.cls.SLOT_TYPES, strict=True):  # type: ignore[attr-defined]  # rosidl message classes (typed `type`) define it at import
            self._out.append((field, _field_out(slot)))
            self._in[field] = _field_in(slot)

    def to_json(self, msg: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, convert in self._out:
            value = getattr(msg, field)
            out[field] = value if convert is None else convert(value)
        return out

    def from_json(self, value: Any) -> Any:
        """Build a message from a JSON object; raises ConversionError naming the offending field."""
        return self.from_json_at(value, '', 0)

    def to_publish(self, value: Any) -> Any:
        """What to hand to `Publisher.publish` for a JSON object: its CDR bytes when the type is flat and the
        values are plainly valid (the fast path), else the message from `from_json` (which may raise)."""
        if not self._wire_built:
            self._wire = _wire_encoder(self.cls)
            self._wire_built = True
        if self._wire is not None:
            data = self._wire(value)
            if data is not None:
                return data
        return self.from_json_at(value, '', 0)

    def from_json_at(self, value: Any, path: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ConversionError(f'{path or "msg"}: nesting deeper than {MAX_DEPTH} levels')
        if not isinstance(value, dict):
            raise ConversionError(f'{path or "msg"}: expected a JSON object for {self.name}, got {_kind(value)}')
        if self._time_like and ('secs' in value or 'nsecs' in value):  # ROS 1 style stamps from old clients
            value = {'sec': value.get('secs', 0), 'nanosec': value.get('nsecs', 0)}
        msg = self.cls()
        for key, item in value.items():
            convert = self._in.get(key)
            if convert is None:
                raise ConversionError(f'{path or "msg"}: {self.name} has no field {key!r}')
            setattr(msg, key, convert(item, f'{path}.{key}' if path else key, depth + 1))
        return msg


_CODECS: dict[type, MessageCodec] = {}


def codec_for(cls: type) -> MessageCodec:
    """The (cached) codec of a generated message class."""
    codec = _CODECS.get(cls)
    if codec is None:
        codec = MessageCodec(cls)
        _CODECS[cls] = codec  # registered before building so recursive types terminate
        try:
            codec._build()
        except BaseException:
            del _CODECS[cls]
            raise
    return codec


def _codec_for_slot(slot: Any) -> MessageCodec:
    name = '/'.join([*slot.namespaces, slot.name])
    package, sub, short = name.split('/')
    return codec_for(_import(package, sub, short, name))
