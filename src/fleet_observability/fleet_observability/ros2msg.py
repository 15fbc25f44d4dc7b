"""ros2msg schema text for Foxglove and MCAP, built from the installed .msg/.srv definitions.

A `ros2msg` schema is the type's own definition followed by every type it uses, each introduced by a line of
80 '=' and `MSG: pkg/Type` (the format rosbag2 and Foxglove read). Definitions are found through the ament
index: <prefix>/share/<pkg>/msg/<Type>.msg and share/<pkg>/srv/<Type>.srv.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

SEPARATOR = '=' * 80

PRIMITIVES = frozenset(
    {
        'bool',
        'byte',
        'char',
        'float32',
        'float64',
        'int8',
        'uint8',
        'int16',
        'uint16',
        'int32',
        'uint32',
        'int64',
        'uint64',
        'string',
        'wstring',
    }
)

_TYPE_NAME = re.compile(
    r'^(?P<pkg>[A-Za-z][A-Za-z0-9_]*)/(?:(?P<kind>msg|srv|action)/)?(?P<name>[A-Za-z][A-Za-z0-9_]*)$'
)
_SRV_SPLIT = re.compile(r'^---\s*$', re.MULTILINE)
ACTION_PARTS = ('_Goal', '_Result', '_Feedback')
"""Messages rosidl derives from each section of an .action file (e.g. RunMission_Feedback)."""
FEEDBACK_MESSAGE = '_FeedbackMessage'
"""The message on <action>/_action/feedback: the goal id and the feedback."""


class SchemaNotFound(LookupError):
    """An interface type whose definition file is not installed (or a malformed type name)."""


def split_type(type_name: str, default_kind: str = 'msg') -> tuple[str, str, str]:
    """('pkg', 'msg', 'Type') from 'pkg/msg/Type' or 'pkg/Type'. Raises SchemaNotFound for other shapes."""
    match = _TYPE_NAME.match(type_name)
    if match is None:
        raise SchemaNotFound(f'{type_name!r} is not an interface type name (expected pkg/msg/Type)')
    return match['pkg'], match['kind'] or default_kind, match['name']


def _share_dir(package: str) -> Path:
    try:
        return Path(get_package_share_directory(package))
    except PackageNotFoundError:
        raise SchemaNotFound(
            f'package {package!r} is not in the ament index (AMENT_PREFIX_PATH); source install/setup.bash'
        ) from None


def _field_type(line: str) -> str | None:
    """The type token of a field or constant line, without array and bound suffixes; None for blank lines."""
    stripped = line.split('#', 1)[0].strip()
    if not stripped:
        return None
    token = stripped.split()[0]
    token = token.split('[', 1)[0]
    return token.split('<=', 1)[0]


class SchemaLibrary:
    """Reads and caches interface definitions. `reader` maps (pkg, kind, Type) to the file text (tests)."""

    def __init__(self, reader: Callable[[str, str, str], str] | None = None) -> None:
        self._reader = reader or self._read_installed
        self._texts: dict[tuple[str, str, str], str] = {}
        self._messages: dict[str, str] = {}

    @staticmethod
    def _read_installed(package: str, kind: str, name: str) -> str:
        path = _share_dir(package) / kind / f'{name}.{kind}'
        try:
            return path.read_text()
        except OSError:
            raise SchemaNotFound(f'no definition for {package}/{kind}/{name} (looked for {path})') from None

    def _text(self, package: str, kind: str, name: str) -> str:
        key = (package, kind, name)
        if key not in self._texts:
            self._texts[key] = self._read(package, kind, name)
        return self._texts[key]

    def _read(self, package: str, kind: str, name: str) -> str:
        derived = action_derived(name) if kind in ('msg', 'action') else None
        if derived is None:
            return self._reader(package, kind, name)
        if kind == 'msg':  # a field type 'pkg/Type_Feedback' may be a plain message or an action's section
            try:
                return self._reader(package, 'msg', name)
            except SchemaNotFound:
                pass
        action, part = derived
        if part == FEEDBACK_MESSAGE:
            return f'unique_identifier_msgs/UUID goal_id\n{package}/{action}_Feedback feedback\n'
        sections = _SRV_SPLIT.split(self._reader(package, 'action', action), maxsplit=2)
        if len(sections) != 3:
            raise SchemaNotFound(f'{package}/action/{action}: expected goal --- result --- feedback')
        return sections[ACTION_PARTS.index(part)].strip('\n') + '\n'

    def _dependencies(self, text: str, package: str) -> list[str]:
        """Types used by fields of `text`, as 'pkg/Type', in order of first use."""
        found: list[str] = []
        for line in text.splitlines():
            token = _field_type(line)
            if token is None or token in PRIMITIVES or '=' in token:
                continue
            dep = token if '/' in token else f'{package}/{token}'
            dep_pkg, _, dep_name = split_type(dep)
            short = f'{dep_pkg}/{dep_name}'
            if short not in found:
                found.append(short)
        return found

    def _append_closure(self, text: str, package: str, parts: list[str], seen: set[str]) -> None:
        stack = list(reversed(self._dependencies(text, package)))
        while stack:
            dep = stack.pop()
            if dep in seen:
                continue
            seen.add(dep)
            dep_pkg, _, dep_name = split_type(dep)
            dep_text = self._text(dep_pkg, 'msg', dep_name)
            parts.append(f'{SEPARATOR}\nMSG: {dep}\n{dep_text.rstrip()}\n')
            stack.extend(reversed(self._dependencies(dep_text, dep_pkg)))

    def _compose(self, text: str, package: str) -> str:
        parts = [text.rstrip() + '\n']
        self._append_closure(text, package, parts, set())
        return ''.join(parts)

    def message(self, type_name: str) -> str:
        """The ros2msg schema of a message type ('pkg/msg/Type', or one an action derives such as
        'pkg/action/Type_FeedbackMessage'). Raises SchemaNotFound."""
        package, kind, name = split_type(type_name)
        if kind == 'srv' or (kind == 'action' and action_derived(name) is None):
            raise SchemaNotFound(f'{type_name!r} is not a message type')
        key = f'{package}/{kind}/{name}'
        if key not in self._messages:
            self._messages[key] = self._compose(self._text(package, kind, name), package)
        return self._messages[key]

    def service(self, type_name: str) -> tuple[str, str]:
        """The (request, response) ros2msg schemas of a service type ('pkg/srv/Type'). Raises SchemaNotFound."""
        package, kind, name = split_type(type_name, default_kind='srv')
        if kind != 'srv':
            raise SchemaNotFound(f'{type_name!r} is not a service type')
        text = self._text(package, 'srv', name)
        halves = _SRV_SPLIT.split(text, maxsplit=1)
        if len(halves) != 2:
            raise SchemaNotFound(f'{package}/srv/{name}: definition has no --- separator')
        return self._compose(halves[0], package), self._compose(halves[1], package)


def action_derived(name: str) -> tuple[str, str] | None:
    """('RunMission', '_Feedback') for 'RunMission_Feedback'; None for names no action derives."""
    for suffix in (FEEDBACK_MESSAGE, *ACTION_PARTS):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return None


def schema_name(type_name: str) -> str:
    """The canonical 'pkg/msg/Type' form used as schema name in Foxglove channels and MCAP."""
    package, kind, name = split_type(type_name)
    return f'{package}/{kind}/{name}'
