"""YAML that remembers where things are: a document's data, the line of every key and list item,
and the keys given twice.

Configuration errors are printed `FILE:LINE: path: message`, as compilers print theirs, so that
editors and CI annotators link them. pydantic reports where a value is as a path of keys and
indexes; `YamlDocument.locate` maps that path back to the line it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["BoundedLoader", "KeyPath", "YamlDocument", "YamlSyntaxError", "dotted", "load_yaml"]

KeyPath = tuple[str | int, ...]


MAX_FLOW_DEPTH = 64  # files we read nest a few levels; PyYAML's scanner is quadratic in [ and { depth


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses [ and { nested over MAX_FLOW_DEPTH deep: 5,000 nested brackets
    (10 KB) take PyYAML seconds before its composer gives up (RecursionError)."""

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # PyYAML names it so
        if self.flow_level >= MAX_FLOW_DEPTH:
            raise yaml.scanner.ScannerError(None, None, f"nested more than {MAX_FLOW_DEPTH} levels deep",
                                            self.get_mark())
        super().fetch_flow_collection_start(TokenClass)


class YamlSyntaxError(Exception):
    """Not YAML (or more than one document); `line` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


@dataclass(frozen=True)
class YamlDocument:
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)  # () is the document itself
    duplicates: list[tuple[KeyPath, int]] = field(default_factory=list)  # the later occurrences

    def locate(self, loc: Sequence[str | int]) -> tuple[KeyPath, int]:
        """The longest part of `loc` that is in the file, and its line. A validator's location can
        go deeper than the file does (a union member's tag, a key that is missing)."""
        path = tuple(loc)
        while path and path not in self.lines:
            path = path[:-1]
        return path, self.lines.get(path, 1)


def dotted(path: Sequence[str | int]) -> str:
    """`runbooks.namespaces[0]`, as the runbook linter writes paths; `(top)` for the document."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top)"


def load_yaml(text: str) -> YamlDocument:
    loader: BoundedLoader | None = None
    try:
        loader = BoundedLoader(text)  # reads the whole text at once: a control character is refused here
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(None, {(): 1})
        # Walked before it is built: building merges `<<:` keys into the mapping, which would
        # make a key that overrides a merged one look like a duplicate.
        lines: dict[KeyPath, int] = {}
        duplicates: list[tuple[KeyPath, int]] = []
        _record(node, (), lines, duplicates, set())
        document = YamlDocument(loader.construct_document(node), lines, duplicates)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlSyntaxError(mark.line + 1 if mark else 1, exc.problem or exc.context or str(exc)) from exc
    except yaml.reader.ReaderError as exc:  # a NUL or another control character
        raise YamlSyntaxError(text.count("\n", 0, exc.position) + 1,
                              f"character {exc.character!r} is not allowed in YAML") from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, str(exc)) from exc
    except RecursionError as exc:  # block collections nested thousands deep: composed recursively
        raise YamlSyntaxError(1, "nested too deeply") from exc
    except ValueError as exc:  # an integer of over 4,300 digits (Python's int() limit)
        raise YamlSyntaxError(1, str(exc)[:200]) from exc
    finally:
        if loader is not None:
            loader.dispose()
    return document


def _record(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], duplicates: list[tuple[KeyPath, int]],
            seen: set[int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in seen:  # an alias: its anchor was walked already (and may contain itself)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else f"<{key_node.tag}>"
            if key in keys:
                duplicates.append(((*path, key), key_node.start_mark.line + 1))
                continue
            keys.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _record(value_node, (*path, key), lines, duplicates, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record(item, (*path, index), lines, duplicates, seen)
