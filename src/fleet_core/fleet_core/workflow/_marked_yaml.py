"""YAML loading that keeps the line of every mapping key and list item, so validation errors can point at them."""

from __future__ import annotations

from typing import Any

import yaml


class MarkedDict(dict[str, Any]):
    """A YAML mapping that remembers its own line and the line of each key (1-based)."""

    line: int
    key_lines: dict[str, int]


class MarkedList(list[Any]):
    """A YAML sequence that remembers its own line and the line of each item (1-based)."""

    line: int
    item_lines: list[int]


class _MarkedLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _MarkedLoader, node: yaml.MappingNode) -> MarkedDict:
    result = MarkedDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        # Keys are the raw scalar text: YAML 1.1 would otherwise turn the key `on` into True.
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, 'mapping keys must be plain scalars', key_node.start_mark
            )
        text = str(key_node.value)
        if text in result:
            raise yaml.constructor.ConstructorError(None, None, f'duplicate key {text!r}', key_node.start_mark)
        result[text] = loader.construct_object(value_node, deep=True)
        result.key_lines[text] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _MarkedLoader, node: yaml.SequenceNode) -> MarkedList:
    result = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_marked(text: str) -> Any:
    """Parse one YAML document into plain values, with MarkedDict/MarkedList for containers.

    Raises yaml.YAMLError (with its own mark) for syntax errors and duplicate keys.
    """
    return yaml.load(text, Loader=_MarkedLoader)  # noqa: S506 - a SafeLoader subclass that only adds line marks


def line_of(container: Any, key: str | int | None = None) -> int:
    """The 1-based line of `key` in `container` (or of the container itself); 0 when unknown."""
    if isinstance(container, MarkedDict):
        if isinstance(key, str) and key in container.key_lines:
            return container.key_lines[key]
        return container.line
    if isinstance(container, MarkedList):
        if isinstance(key, int) and 0 <= key < len(container.item_lines):
            return container.item_lines[key]
        return container.line
    return 0
