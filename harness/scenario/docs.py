"""docs/scenario.md, generated from the scenario models (declared once; a test keeps the
file in sync): every key path with its type, default and meaning."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from harness.scenario.models import Scenario


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"list[{_type_name(typing.get_args(annotation)[0])}]"
    if origin is dict:
        k, v = typing.get_args(annotation)
        return f"map {_type_name(k)} → {_type_name(v)}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _nested(annotation: Any) -> type[BaseModel] | None:
    for a in [annotation, *typing.get_args(annotation)]:
        for b in [a, *typing.get_args(a)]:
            if isinstance(b, type) and issubclass(b, BaseModel):
                return b
    return None


def _bounds(field: Any) -> str:
    out = []
    for m in field.metadata:
        for attr, sym in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"),
                          ("min_length", "length ≥"), ("max_length", "length ≤")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} {v}")
    return ", ".join(out)


def rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _nested(field.annotation)
        is_list = typing.get_origin(field.annotation) is list or any(
            typing.get_origin(a) is list for a in typing.get_args(field.annotation))
        if field.is_required():
            default = "**required**"
        elif field.default_factory is not None:
            default = "(defaults below)" if nested else "`[]`/`{}`"
        elif field.default is PydanticUndefined:
            default = ""
        else:
            default = f"`{field.default!r}`"
        doc = (field.description or "").replace("|", "/").replace("\n", " ")
        bounds = _bounds(field)
        if bounds:
            doc = f"{doc} ({bounds})" if doc else bounds
        out.append(f"| `{path}` | {_type_name(field.annotation).replace('|', '/')} | "
                   f"{default} | {doc} |")
        if nested is not None:
            out += rows(nested, f"{path}[]." if is_list else f"{path}.")
    return out


def markdown() -> str:
    head = ["# Scenario file reference", "",
            "Generated from `harness/scenario/models.py` by "
            "`python -m harness.scenario.docs`; do not edit by hand. "
            "`harness schema` prints the same as JSON schema.", "",
            "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    return "\n".join(head + rows(Scenario)) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
