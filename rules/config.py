"""Strict loading of what people write (YAML): unknown keys and bad values are errors that name
the file, the line and the key, and say how to fix them.

Machines' messages are decoded tolerantly by ``wire``; people's files are not: a misspelt key
in a gas rule must stop the gateway from starting, not silently use a default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

T = TypeVar("T")


class ConfigError(Exception):
    """A config or rule file is wrong. ``str()`` says where and what."""

    def __init__(self, source: str, line: int | None, where: str, problem: str) -> None:
        at = f"{source}:{line}" if line else source
        key = f" at {where}" if where else ""
        super().__init__(f"{at}: {problem}{key}")
        self.source = source
        self.line = line
        self.where = where
        self.problem = problem


_PATH_PART = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]")


def _line_of(node: yaml.Node | None, path: str) -> int | None:
    """Follow a msgspec error path (``$.gas.low`` or ``$.devices[2].id``) through YAML nodes."""
    if node is None:
        return None
    best = node
    for key, index in _PATH_PART.findall(path.removeprefix("$")):
        nxt: yaml.Node | None = None
        if key and isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
            if nxt is None:  # unknown or missing key: point at the mapping that holds it
                break
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            nxt = node.value[int(index)]
        if nxt is None:
            break
        node = best = nxt
    return best.start_mark.line + 1


def _unknown_key_line(node: yaml.Node | None, path: str, key: str) -> int | None:
    line = _line_of(node, path)
    target = node
    for part_key, index in _PATH_PART.findall(path.removeprefix("$")):
        if isinstance(target, yaml.MappingNode) and part_key:
            target = next(
                (v for k, v in target.value if getattr(k, "value", None) == part_key), None
            )
        elif isinstance(target, yaml.SequenceNode) and index:
            target = target.value[int(index)] if int(index) < len(target.value) else None
    if isinstance(target, yaml.MappingNode):
        for k, _ in target.value:
            if getattr(k, "value", None) == key:
                return int(k.start_mark.line) + 1
    return line


# libyaml's loader when PyYAML was built with it: a 10,000-device gateway config loads in a
# fraction of the pure-Python time. Both are safe loaders (plain data, no Python objects).
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str, model: type[T], source: str) -> T:
    """Parse ``text`` as YAML into ``model`` (a msgspec Struct with forbid_unknown_fields)."""
    try:
        data: Any = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader, C if built
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(source, line, "", f"not valid YAML: {exc.problem}") from exc
    if data is None:
        data = {}
    try:
        return msgspec.convert(data, model, strict=True)
    except msgspec.ValidationError as exc:
        # Only now the node tree, for the line numbers: composing it costs as much as the parse.
        node = yaml.compose(text, Loader=_LOADER)
        message = str(exc)
        problem, _, where = message.partition(" - at `")
        where = where.rstrip("`") or "$"
        unknown = re.search(r"unknown field `([^`]+)`", problem)
        if unknown:
            line = _unknown_key_line(node, where, unknown.group(1))
            problem = f"unknown key {unknown.group(1)!r} (check its spelling; see docs/)"
        else:
            line = _line_of(node, where)
        raise ConfigError(source, line, where, problem) from exc
    except ValueError as exc:  # a model's own check in __post_init__
        raise ConfigError(source, None, "", str(exc)) from exc


def load_file(path: Path, model: type[T]) -> T:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), None, "", f"cannot read the file: {exc.strerror}") from exc
    return load_yaml(text, model, str(path))
