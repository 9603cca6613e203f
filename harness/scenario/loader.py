"""Scenario file → validated Scenario, with every error as `file:line: key.path: message`."""

from __future__ import annotations

import difflib
import os
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.errors import ScenarioError
from harness.load.profile import Profile, ProfileError
from harness.scenario.models import At, Scenario
from harness.scenario.thresholds import Threshold, parse_threshold
from harness.scenario.yamlsafe import Located, load_file, load_text


@dataclass(frozen=True)
class LoadedScenario:
    scenario: Scenario
    path: Path  # the file it came from; relative paths inside it resolve against its folder
    # Parsed once here, so every cross-reference is checked before anything runs.
    thresholds: tuple[Threshold, ...] = field(default=())

    def resolve(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else (self.path.parent / p)


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that holds the last key of ``loc`` (for "did you mean" hints)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    # Optional[X], list[X], X | None → X: the model a nested key would belong to.
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
            if len(args) != 1:
                return annotation
        elif origin in (list, tuple):
            annotation = typing.get_args(annotation)[0]
        elif origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    loc = tuple(err.get("loc", ()))
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = str(err.get("msg", "invalid value"))
    # pydantic prefixes our own ValueErrors with "Value error, "
    msg = msg.removeprefix("Value error, ")
    if "input" in err and kind not in ("model_type", "dict_type") and loc:
        value = err["input"]
        if isinstance(value, str | int | float | bool) or value is None:
            msg += f" (got {value!r})"
    return msg


def _model_names(cls: type[BaseModel] = BaseModel) -> set[str]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub.__name__} | _model_names(sub)
    return out


# pydantic puts the member's class name in the location of an error inside a union
_MODEL_NAMES = _model_names()


def _most_specific(errors: list[Any]) -> Any:
    """For a union field (a metric preset name or a custom-metric mapping) pydantic reports
    one error per member; the deepest one says what is wrong inside the value given."""
    first = errors[0]
    head = tuple(first.get("loc", ()))[:-1]
    same_field = [e for e in errors if tuple(e.get("loc", ()))[:len(head)] == head]
    return max(same_field, key=lambda e: len(e.get("loc", ())))


def _scenario_error(e: ValidationError, located: Located) -> ScenarioError:
    errors = e.errors()
    err = _most_specific(errors)
    loc = tuple(p for p in err.get("loc", ())
                if not (isinstance(p, str) and ("[" in p or p in _MODEL_NAMES)))
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, At):
        loc = (*loc, *cause.loc)
    # pydantic appends a synthetic "function-after[...]" segment for model validators
    key = ".".join(f"[{p}]" if isinstance(p, int) else str(p) or '""' for p in loc
                   ).replace(".[", "[")
    msg = _message(err)
    if err.get("type") == "extra_forbidden" and loc and isinstance(loc[-1], str):
        holder = _model_at(Scenario, loc[:-1])
        if holder is not None:
            close = difflib.get_close_matches(loc[-1], list(holder.model_fields), n=1,
                                              cutoff=0.6)
            if close:
                msg += f"; did you mean {close[0]!r}?"
            else:
                msg += f"; allowed here: {', '.join(holder.model_fields)}"
    if len(errors) > 1:
        msg += f" (+{len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return ScenarioError(msg, file=located.file, line=located.line_of(loc), key=key or None)


def validate(located: Located) -> Scenario:
    try:
        return Scenario.model_validate(located.data)
    except ValidationError as e:
        raise _scenario_error(e, located) from None


def load_scenario(path: str | Path) -> LoadedScenario:
    """The scenario and everything it refers to, checked: a bad threshold, a missing
    locustfile or a malformed trace is a `file:line: key: message` before any run starts."""
    located = load_file(path)
    scenario = validate(located)
    base = LoadedScenario(scenario=scenario, path=Path(path).resolve())
    _check_files(base, located)
    _check_sim_metrics(scenario, located)
    strategies = [s.name for s in scenario.strategies]
    parsed = []
    for i, text in enumerate(scenario.thresholds):
        try:
            parsed.append(parse_threshold(text, i, strategies))
        except ScenarioError as e:
            raise ScenarioError(e.detail, file=located.file,
                                line=located.line_of(("thresholds", i)),
                                key=e.key) from None
    return LoadedScenario(scenario=scenario, path=base.path, thresholds=tuple(parsed))


def _check_files(loaded: LoadedScenario, located: Located) -> None:
    load = loaded.scenario.load
    for key, value in (("trace", load.trace), ("locustfile", load.locustfile)):
        if not value:
            continue
        where = {"file": located.file, "line": located.line_of(("load", key)),
                 "key": f"load.{key}"}
        target = loaded.resolve(value)
        problem = _input_file_problem(target)
        if problem:
            raise ScenarioError(f"file {value!r} {problem}", **where)
        if key == "trace":
            try:
                Profile.from_csv(target)
            except ProfileError as e:
                raise ScenarioError(f"malformed trace: {e}", **where) from None


def _input_file_problem(p: Path) -> str | None:
    """Why `p` cannot serve as a trace / locustfile, or None. Never opens it: a FIFO
    would block, and its content is never echoed."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return "not found (relative to the scenario's folder)"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if not os.access(p, os.R_OK):
        return "is not readable"
    return None


def _check_sim_metrics(scenario: Scenario, located: Located) -> None:
    """The sim models only the metric presets: a custom PromQL metric would fail every
    trial at run time, so on `platform: sim` it is refused here."""
    if scenario.platform != "sim":
        return
    for i, s in enumerate(scenario.strategies):
        a = s.autoscaler
        if a is not None and not isinstance(a.metric, str):
            path = ("strategies", i, "autoscaler", "metric")
            raise ScenarioError("the sim platform models only the metric presets; a custom "
                                "PromQL metric needs --platform docker or local",
                                file=located.file, line=located.line_of(path),
                                key=f"strategies[{i}].autoscaler.metric")


def load_scenario_text(text: str, file: str = "<string>") -> Scenario:
    return validate(load_text(text, file=file))
