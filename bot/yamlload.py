"""YAML loading that remembers lines, for error messages that name the file and line ("file.yaml:42: ...").

A generic utility at the bottom layer: the playbook loader (bot/engine/playbook.py) and the simulator's scenario
loader (bot/sim/scenario.py) both use it. It knows nothing of either format, nor of ClearML.
"""

from __future__ import annotations

from typing import Any

import yaml

from bot.errors import BotError

# libyaml's safe loader when PyYAML was built with it (10-30x faster than the pure-Python one); same safety.
_SafeBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LocatedDict(dict):  # type: ignore[type-arg]
    """A mapping that remembers where it (and each of its keys) came from: key -> (source, line)."""

    source: str = "<dict>"
    line: int | None = None
    key_lines: dict[Any, tuple[str, int]]


class LocatedList(list):  # type: ignore[type-arg]
    """A sequence that remembers where it (and each of its items) came from."""

    source: str = "<dict>"
    line: int | None = None
    item_lines: list[tuple[str, int] | None]


class YamlKeyError(BotError, ValueError):
    """A mapping key refused by a strict load (duplicate, or not a plain value); the message names file and line."""


def _loader(source: str, *, strict_keys: bool, located_lists: bool) -> type[yaml.SafeLoader]:
    class Loader(_SafeBase):  # type: ignore[misc, valid-type]
        pass

    def construct_mapping(loader: Any, node: yaml.MappingNode) -> LocatedDict:
        if not strict_keys:
            # the safe constructor's own mapping: merge keys, the last of duplicate keys wins, an unhashable key
            # is a YAML error
            out = LocatedDict(loader.construct_mapping(node, deep=True))
            out.source, out.line = source, node.start_mark.line + 1
            out.key_lines = {
                loader.construct_object(key_node, deep=True): (source, key_node.start_mark.line + 1)
                for key_node, _ in node.value
            }
            return out
        out = LocatedDict()
        out.source, out.line, out.key_lines = source, node.start_mark.line + 1, {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise YamlKeyError(f"{source}:{key_node.start_mark.line + 1}: a mapping key must be a "
                                   "plain value") from None
            if key in out:
                raise YamlKeyError(f"{source}:{key_node.start_mark.line + 1}: duplicate key {key!r}")
            out[key] = loader.construct_object(value_node, deep=True)
            out.key_lines[key] = (source, key_node.start_mark.line + 1)
        return out

    def construct_sequence(loader: Any, node: yaml.SequenceNode) -> LocatedList:
        out = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
        out.source, out.line = source, node.start_mark.line + 1
        out.item_lines = [(source, child.start_mark.line + 1) for child in node.value]
        return out

    Loader.add_constructor("tag:yaml.org,2002:map", construct_mapping)
    if located_lists:
        Loader.add_constructor("tag:yaml.org,2002:seq", construct_sequence)
    return Loader


def load_with_lines(text: str, source: str, *, strict_keys: bool = False, located_lists: bool = False) -> Any:
    """The YAML document in `text` (safe load), its mappings as `LocatedDict`s (and with `located_lists`, its
    sequences as `LocatedList`s). `strict_keys` refuses duplicate and non-scalar keys with `YamlKeyError`; without
    it the last of duplicate keys wins, as in plain `yaml.safe_load`. YAML syntax errors raise `yaml.YAMLError`."""
    return yaml.load(text, Loader=_loader(source, strict_keys=strict_keys, located_lists=located_lists))
