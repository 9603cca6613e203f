"""Strict YAML reading for scenario files: plain data plus the line of every key.

Refused before anything is started, each with a one-line ScenarioError naming file and line:
files over MAX_BYTES, non-UTF-8 bytes, several documents, tags that would construct
objects (anything beyond the YAML core schema), duplicate keys, merge keys (``<<``) and
alias expansion beyond MAX_NODES (the "billion laughs" bomb), and nesting deeper than
MAX_DEPTH (PyYAML's composer recurses once per level: 500 `[` in under 1 KB would end in
a RecursionError), found by a flat pass over the tokens before anything is composed.

Only ``yaml.SafeLoader``'s composer is used: nodes are turned into Python values here, by
hand, so no constructor beyond str/int/float/bool/null/list/dict ever runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ScenarioError

MAX_BYTES = 256 * 1024
MAX_NODES = 20_000  # values after alias expansion; a real scenario has a few hundred
MAX_DEPTH = 32  # nested lists/mappings; a real scenario nests 5 deep

_OPEN = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken,
         yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_CORE}{t}" for t in ("str", "int", "float", "bool", "null")}

Path_ = tuple[str | int, ...]


@dataclass
class Located:
    """The parsed data and where each key path stands in the file."""

    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    file: str = "<string>"

    def line_of(self, path: Path_) -> int | None:
        """Line of the deepest prefix of ``path`` that exists in the file."""
        for n in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:n]))
            if line is not None:
                return line
        return None


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Path_, int] = {}
        self.count = 0
        self._scalar = yaml.SafeLoader("")  # only for its scalar constructors

    def fail(self, node: yaml.Node, message: str, path: Path_ = ()) -> ScenarioError:
        key = ".".join(str(p) for p in path) or None
        return ScenarioError(message, file=self.file, line=node.start_mark.line + 1, key=key)

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(node, f"more than {MAX_NODES} values after expanding aliases "
                                  "(an alias bomb?); refusing to read further")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                raise self.fail(node, f"YAML tag {node.tag!r} is not allowed "
                                      "(scenarios are plain data)", path)
            return self._scalar.construct_object(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != f"{_CORE}seq":
                raise self.fail(node, f"YAML tag {node.tag!r} is not allowed", path)
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag != f"{_CORE}map":
                raise self.fail(node, f"YAML tag {node.tag!r} is not allowed", path)
            out: dict[str, Any] = {}
            for knode, vnode in node.value:
                if knode.tag == f"{_CORE}merge":
                    raise self.fail(knode, "merge keys ('<<') are not supported; "
                                           "write the keys out", path)
                if not isinstance(knode, yaml.ScalarNode) or knode.tag not in _SCALAR_TAGS:
                    raise self.fail(knode, "mapping keys must be plain scalars", path)
                key = str(self._scalar.construct_object(knode))
                if key in out:
                    raise self.fail(knode, f"duplicate key {key!r} (first at line "
                                           f"{self.lines[(*path, key)]})", (*path, key))
                self.lines[(*path, key)] = knode.start_mark.line + 1
                out[key] = self.build(vnode, (*path, key))
            return out
        raise self.fail(node, f"unexpected YAML node {type(node).__name__}", path)


def _check_depth(text: str, file: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH, naming the key under which it starts."""
    keys: list[str | None] = []  # the key each open collection is the value of
    pending: str | None = None
    after_key = False
    for tok in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(tok, _OPEN):
            keys.append(pending)
            pending = None
            if len(keys) > MAX_DEPTH:
                path = ".".join(k for k in keys if k) or None
                raise ScenarioError(f"nested more than {MAX_DEPTH} levels deep; "
                                    "refusing to read further",
                                    file=file, line=tok.start_mark.line + 1, key=path)
        elif isinstance(tok, _CLOSE):
            if keys:
                keys.pop()
        elif isinstance(tok, yaml.KeyToken):
            after_key = True
            continue
        elif isinstance(tok, yaml.ScalarToken) and after_key:
            pending = tok.value
        after_key = False


def load_text(text: str, file: str = "<string>") -> Located:
    try:
        _check_depth(text, file)
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = e.problem or e.context or "invalid YAML"
        raise ScenarioError(f"invalid YAML: {problem}", file=file, line=line) from None
    except yaml.YAMLError as e:
        raise ScenarioError(f"invalid YAML: {e}", file=file) from None
    nodes = [n for n in nodes if n is not None]
    if not nodes:
        raise ScenarioError("the file is empty", file=file)
    if len(nodes) > 1:
        raise ScenarioError("several YAML documents ('---'); a scenario is one document",
                            file=file, line=nodes[1].start_mark.line + 1)
    builder = _Builder(file)
    data = builder.build(nodes[0], ())
    if not isinstance(data, dict):
        raise ScenarioError("a scenario must be a mapping of keys at the top level",
                            file=file, line=1)
    return Located(data=data, lines=builder.lines, file=file)


def load_file(path: str | Path) -> Located:
    p = Path(path)
    name = str(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise ScenarioError("no such file", file=name) from None
    except OSError as e:
        raise ScenarioError(f"cannot read: {e.strerror}", file=name) from None
    if not p.is_file():
        raise ScenarioError("not a regular file", file=name)
    if size > MAX_BYTES:
        raise ScenarioError(f"file is {size} bytes, over the {MAX_BYTES}-byte limit for "
                            "scenarios", file=name)
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ScenarioError(f"not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})",
                            file=name, line=line) from None
    if "\x00" in text:
        raise ScenarioError("contains NUL bytes (a binary file?)", file=name)
    return load_text(text, file=name)
