"""YAML files to frozen dataclasses, with errors that name the file and the dotted key (no rclpy, no I/O beyond
reading the one file). Every config loader of the suite builds on these few functions; each passes its own error
class so callers keep catching the exception type of their package."""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar('T')

ErrorFactory = Callable[[str], Exception]
"""Builds the exception to raise from its message: usually the caller's own `ConfigError` class."""

Validator = Callable[[str, Any], str | None]
"""Range check of one value after its type was checked: `(key, value)` -> the problem in words, or None if fine."""


class YamlConfigError(ValueError):
    """A config file is unreadable or a value is of the wrong type or out of range; the message names file and key."""


def key_path(source: str, section: str, key: str | None = None) -> str:
    """`file: section.key`, the prefix of every message (`section` may be '' for a flat mapping, `source` ''
    when the caller has no file name)."""
    dotted = '.'.join(part for part in (section, key) if part)
    return ': '.join(part for part in (source, dotted) if part)


def read_yaml(path: str | os.PathLike[str], what: str, error: ErrorFactory = YamlConfigError) -> object:
    """The decoded YAML document in `path`; a missing file or a syntax error raises `error` naming the file."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise error(f'{file}: cannot read {what}: {exc.strerror}') from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f'{file}: {what} is invalid YAML: {exc}') from None


def mapping(raw: object, source: str, section: str, error: ErrorFactory = YamlConfigError) -> Mapping[str, Any]:
    """`raw` as a mapping: None (an empty YAML section) is an empty one, anything else but a mapping an error."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise error(f'{key_path(source, section)}: expected a mapping, got {type(raw).__name__}')
    return raw


def check_keys(
    raw: Mapping[Any, Any], known: Collection[str], source: str, section: str, error: ErrorFactory = YamlConfigError
) -> None:
    """Refuse the first unknown key (sorted), listing the known ones."""
    unknown = sorted(str(key) for key in raw if key not in known)
    if unknown:
        raise error(f'{key_path(source, section, unknown[0])}: unknown key (known: {", ".join(sorted(known))})')


def coerce(expected: object, given: object, source: str, key: str, error: ErrorFactory = YamlConfigError) -> Any:
    """`given` checked against the type of the default value `expected`: a float takes an int, an int or a float
    never a bool, a tuple takes a list (items checked like the default's first item), an enum takes its value, a
    dataclass a mapping. A default of another type (None, a path) accepts anything. `key` is dotted."""
    where = key_path(source, key)
    if isinstance(expected, bool):
        if not isinstance(given, bool):
            raise error(f'{where}: expected true or false, got {given!r}')
        return given
    if isinstance(expected, str):
        if type(given) is not str:
            raise error(f'{where}: expected a string, got {given!r}')
        return given
    if isinstance(expected, enum.Enum):
        try:
            return type(expected)(given)
        except ValueError:
            known = ', '.join(str(member.value) for member in type(expected))
            raise error(f'{where}: expected one of {known}, got {given!r}') from None
    if isinstance(expected, int):
        if type(given) is not int:
            raise error(f'{where}: expected an integer, got {given!r}')
        return given
    if isinstance(expected, float):
        if isinstance(given, bool) or not isinstance(given, int | float):
            raise error(f'{where}: expected a number, got {given!r}')
        return float(given)
    if isinstance(expected, tuple):
        if not isinstance(given, list | tuple):
            raise error(f'{where}: expected a list, got {given!r}')
        if not expected:
            return tuple(given)
        return tuple(coerce(expected[0], item, source, f'{key}[{i}]', error) for i, item in enumerate(given))
    if dataclasses.is_dataclass(expected) and not isinstance(expected, type):
        return build(type(expected), given, source, key, error)
    return given


def build(
    cls: type[T],
    raw: object,
    source: str,
    section: str,
    error: ErrorFactory = YamlConfigError,
    *,
    validate: Validator | None = None,
    own_errors: tuple[type[Exception], ...] = (),
) -> T:
    """The dataclass `cls` (all fields defaulted) from the mapping `raw` (None: all defaults). Unknown keys and
    values of the wrong type are refused naming `source: section.key`; `validate` then checks each given value's
    range. Exceptions of `own_errors` raised by `cls` itself (its `__post_init__`) are re-raised as `error` with
    the file name in front."""
    values = mapping(raw, source, section, error)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # T is a dataclass by contract
    check_keys(values, names, source, section, error)
    kwargs = typed_values(cls(), values, source, section, error, validate=validate)
    try:
        return cls(**kwargs)
    except own_errors as exc:
        raise error(key_path(source, '', str(exc))) from None


def typed_values(
    defaults: object,
    values: Mapping[str, Any],
    source: str,
    section: str,
    error: ErrorFactory = YamlConfigError,
    *,
    validate: Validator | None = None,
) -> dict[str, Any]:
    """Each of `values` checked against the type of the same-named attribute of `defaults` (see `coerce`), then
    by `validate`; the keys must already be known ones."""
    checked: dict[str, Any] = {}
    for key, given in values.items():
        dotted = f'{section}.{key}' if section else key
        value = coerce(getattr(defaults, key), given, source, dotted, error)
        problem = validate(key, value) if validate is not None else None
        if problem is not None:
            raise error(f'{key_path(source, dotted)}: {problem}')
        checked[key] = value
    return checked


def positive(_key: str, value: Any) -> str | None:
    """Validator: every number must be > 0 (strings, enums and tuples are not checked)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and not value > 0:
        return f'must be > 0, got {value!r}'
    return None


def non_negative(_key: str, value: Any) -> str | None:
    """Validator: every number must be >= 0."""
    if isinstance(value, int | float) and not isinstance(value, bool) and not value >= 0:
        return f'must be >= 0, got {value!r}'
    return None
