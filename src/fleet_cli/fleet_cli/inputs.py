"""fleetctl's operator input, checked in one place: argparse types (a bad value becomes one line and exit 2 through
`FleetArgumentParser.error`) and the checks that need the fleet config. Nothing here touches ROS."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from typing import NoReturn

from fleet_core.config import FleetConfig

EXIT_USAGE = 2
MAX_JSON_DEPTH = 32
"""Deeper --args/--arg values are refused here; no command kind takes more than a few levels."""
MAX_COMMAND_ID_CHARS = 128


class UsageError(Exception):
    """Invalid operator input: printed as one line, exit code 2."""


class FleetArgumentParser(argparse.ArgumentParser):
    """argparse prints its usage and then the error; fleetctl prints one line that names the fix, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


# -- argparse types ------------------------------------------------------------------------------------------


def seconds(text: str) -> float:
    """A finite duration > 0, e.g. --ttl or --wait ('inf', 'nan', '0' and '-1' are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number of seconds') from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f'must be a finite number of seconds > 0, got {text!r}')
    return value


def command_id(text: str) -> str:
    """A command id as fleetctl prints it: non-empty, no whitespace or control characters."""
    if not text:
        raise argparse.ArgumentTypeError('the command id is empty')
    if len(text) > MAX_COMMAND_ID_CHARS:
        raise argparse.ArgumentTypeError(f'the command id is longer than {MAX_COMMAND_ID_CHARS} characters')
    if not text.isprintable() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f'the command id {text!r} contains spaces or control characters')
    return text


# -- checks that need more than one argument -----------------------------------------------------------------


def check_ttl(ttl_sec: float, fleet: FleetConfig) -> float:
    """The orchestrators refuse a deadline past dispatch.max_ttl_sec; say so before anything is sent."""
    limit = fleet.dispatch.max_ttl_sec
    if not (math.isfinite(ttl_sec) and 0 < ttl_sec <= limit):
        raise UsageError(
            f'--ttl must be in (0, {limit:g}] seconds (dispatch.max_ttl_sec of {fleet.source}), got {ttl_sec:g}'
        )
    return ttl_sec


def _depth(value: object) -> int:
    """Nesting depth of a decoded JSON value, without recursion (a hostile value cannot exhaust the stack)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
            deepest = max(deepest, level + 1)
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
            deepest = max(deepest, level + 1)
    return deepest


def _no_constant(name: str) -> object:
    raise ValueError(f'{name} is not JSON')


def _load_json(text: str, what: str) -> object:
    """Raises ValueError for invalid JSON (NaN and Infinity included) and UsageError for too deeply nested JSON
    (json.loads raises RecursionError past ~1000 levels)."""
    try:
        value: object = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise UsageError(f'{what} is nested deeper than {MAX_JSON_DEPTH} levels') from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise UsageError(f'{what} is nested deeper than {MAX_JSON_DEPTH} levels')
    return value


def command_args_json(args_text: str, items: Sequence[str]) -> str:
    """--args (a JSON object) with every --arg KEY=VALUE laid over it (VALUE is JSON, else taken as a string), as
    compact JSON. Raises UsageError naming the bad option."""
    try:
        values = _load_json(args_text, '--args')
    except ValueError as exc:
        raise UsageError(f'--args is not valid JSON: {exc}') from None
    if not isinstance(values, dict):
        raise UsageError('--args must be a JSON object')
    for item in items:
        key, sep, raw = item.partition('=')
        if not sep or not key:
            raise UsageError(f'--arg {item[:64]!r}: expected KEY=VALUE')
        try:
            values[key] = _load_json(raw, f'--arg {key[:64]}')
        except ValueError:
            values[key] = raw
    return json.dumps(values, separators=(',', ':'))
