"""Strict typed configuration: raw YAML/override dicts -> dataclass instances, checked before use.

Every config section is a dataclass next to the code that uses it; its fields carry their help text
and constraints in `dataclasses.field(metadata=...)`, made with `opt(...)`. `convert(Cls, raw, "key")`
checks a plain mapping against the class and returns an instance:

- unknown keys are errors with a "did you mean" suggestion (difflib);
- values are checked against the annotations (bool, int, float, str, Optional, list[X], dict[str, X],
  nested dataclasses, `Any`); an integral float is accepted for an int, an int for a float;
- constraints from `opt`: `ge`, `gt`, `le`, `lt` (numbers, each element of a list), `choices`,
  `length` (lists);
- a polymorphic section (`variants=` in `opt`) picks its dataclass from the value of its tag key
  (`name`), e.g. the neck type or the loss-weighting strategy;
- a dataclass may define `validate(self, key)` for checks across its fields, and a classmethod
  `prepare(raw) -> raw` that completes the raw mapping first.

Every problem raises `ChangeAgentError("<dotted.key>: <what is wrong>")`. The result is turned into an
OmegaConf structured config by `changeagent.engine.schema`, so later assignments stay type-checked.
This module imports no torch, so validating a config is cheap.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, Union

from changeagent.errors import ChangeAgentError

T = TypeVar("T")
_NONE = type(None)


def opt(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
        ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
        choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None, length: int | None = None,
        variants: Callable[[], Mapping[str, type]] | None = None, tag: str = "name") -> Any:
    """A dataclass field with its help text and constraints (see the module docstring).

    `choices` may be a callable (a registry read at check time). `variants` maps tag values to the
    dataclass of a polymorphic section; the field's default (or `factory`) gives the default variant.
    """
    md: dict[str, Any] = {"help": help}
    for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt), ("choices", choices), ("length", length),
                 ("variants", variants)):
        if v is not None:
            md[k] = v
    if variants is not None:
        md["tag"] = tag
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=md)
    return dataclasses.field(default=default, metadata=md)


def suggest(word: str, known: Sequence[str]) -> str:
    """`" (did you mean 'x'?)"` for the closest known name, or ""."""
    names = [str(k) for k in known]
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    if not close and len(str(word)) >= 3:  # an abbreviation: `temp` for `temperature`
        close = [n for n in names if n.startswith(str(word))][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def join(key: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{key}[{name}]"
    return f"{key}.{name}" if key else str(name)


def fail(key: str, what: str) -> typing.NoReturn:
    raise ChangeAgentError(f"{key or 'config'}: {what}")


def choices_of(md: Mapping[str, Any]) -> list[Any] | None:
    c = md.get("choices")
    if c is None:
        return None
    return list(c() if callable(c) else c)


def variants_of(md: Mapping[str, Any]) -> dict[str, type]:
    v = md["variants"]
    return dict(v() if callable(v) else v)


def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain(raw: Any) -> Any:
    """OmegaConf containers -> plain Python (so this module works on either)."""
    mod = type(raw).__module__
    if mod.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(raw, resolve=True)
    return raw


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def convert(cls: type[T], raw: Any, key: str = "") -> T:
    """Check the mapping `raw` against dataclass `cls`; an instance with defaults filled in."""
    raw = _plain(raw)
    if raw is None:
        raw = {}
    if dataclasses.is_dataclass(raw) and not isinstance(raw, type):
        raw = dataclasses.asdict(raw)
    if not isinstance(raw, Mapping):
        fail(key, f"expected a mapping of {', '.join(fields_of(cls))}, got {_show(raw)}")
    prepare = getattr(cls, "prepare", None)
    if callable(prepare):  # a class may complete the raw mapping first (e.g. implied switches)
        raw = prepare(dict(raw))
    fields = fields_of(cls)
    hints = type_hints(cls)
    for name in raw:
        if name not in fields:
            known = list(fields)
            fail(join(key, str(name)), f"unknown key{suggest(str(name), known)}; known keys here: {', '.join(known)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        sub = join(key, name)
        if "variants" in f.metadata:
            kwargs[name] = _convert_variant(f, raw.get(name, dataclasses.MISSING), sub)
            continue
        if name not in raw:
            if _default_of(f) is dataclasses.MISSING:
                fail(sub, "required key is missing")
            continue
        value = coerce(hints[name], raw[name], sub)
        check_constraints(value, f.metadata, sub)
        kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(key)
    return obj


def _convert_variant(f: dataclasses.Field, raw: Any, key: str) -> Any:
    variants = variants_of(f.metadata)
    tag = f.metadata["tag"]
    default = _default_of(f)
    if raw is dataclasses.MISSING:
        return default
    raw = _plain(raw)
    if raw is None and default is None:
        return None
    if dataclasses.is_dataclass(raw) and not isinstance(raw, type):
        raw = dataclasses.asdict(raw)
    if not isinstance(raw, Mapping):
        fail(key, f"expected a mapping with a `{tag}` ({', '.join(variants)}), got {_show(raw)}")
    name = raw.get(tag, getattr(default, tag, None))
    if name not in variants:
        fail(join(key, tag), f"{_show(name)} is not one of {', '.join(variants)}{suggest(str(name), list(variants))}")
    return convert(variants[name], {**raw, tag: name}, key)


def coerce(tp: Any, value: Any, key: str) -> Any:
    """`value` checked against the annotation `tp` (see the module docstring)."""
    value = _plain(value)
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if _NONE in args:
                return None
            fail(key, f"must not be null (expected {_name(tp)})")
        errors = []
        for arg in args:
            if arg is _NONE:
                continue
            try:
                return coerce(arg, value, key)
            except ChangeAgentError as e:
                errors.append(str(e))
        if len(errors) == 1:
            raise ChangeAgentError(errors[0])
        fail(key, f"expected {_name(tp)}, got {_show(value)}")
    if value is None:
        fail(key, f"must not be null (expected {_name(tp)})")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return convert(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        fail(key, f"expected true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        fail(key, f"expected an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        fail(key, f"expected a number, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        fail(key, f"expected a string, got {_show(value)}")
    if origin in (list, Sequence) or tp is list:
        (item,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            fail(key, f"expected a list, got {_show(value)}")
        return [coerce(item, v, join(key, i)) for i, v in enumerate(value)]
    if origin in (dict, Mapping) or tp is dict:
        args = typing.get_args(tp)
        item = args[1] if args else Any
        if not isinstance(value, Mapping):
            fail(key, f"expected a mapping, got {_show(value)}")
        return {str(k): coerce(item, v, join(key, str(k))) for k, v in value.items()}
    raise TypeError(f"{key}: unsupported annotation {tp!r} in a config schema")


def _name(tp: Any) -> str:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join("null" if a is _NONE else _name(a) for a in typing.get_args(tp))
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    if typing.get_origin(tp) is list:
        return "a list"
    if typing.get_origin(tp) is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def check_constraints(value: Any, md: Mapping[str, Any], key: str) -> None:
    """Range / choice / length constraints of a field (list values: on each element)."""
    if value is None:
        return
    length = md.get("length")
    if length is not None and isinstance(value, list) and len(value) != length:
        fail(key, f"needs exactly {length} values, got {len(value)}: {_show(value)}")
    allowed = choices_of(md)
    items = value if isinstance(value, list) else [value]
    for i, v in enumerate(items):
        where = join(key, i) if isinstance(value, list) else key
        if allowed is not None and v not in allowed:
            fail(where, f"{_show(v)} is not one of {', '.join(map(str, allowed))}{suggest(str(v), [str(a) for a in allowed])}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            for op, bad, text in (("ge", lambda a, b: a < b, ">="), ("gt", lambda a, b: a <= b, ">"),
                                  ("le", lambda a, b: a > b, "<="), ("lt", lambda a, b: a >= b, "<")):
                if op in md and bad(v, md[op]):
                    fail(where, f"must be {describe_range(md)}, got {v}" if _two_sided(md) else
                         f"must be {text} {md[op]}, got {v}")


def _two_sided(md: Mapping[str, Any]) -> bool:
    return ("ge" in md or "gt" in md) and ("le" in md or "lt" in md)


def describe_range(md: Mapping[str, Any]) -> str:
    """'in [0, 1)', '>= 1', ... for the docs and messages; '' without a range."""
    lo = "[" + str(md["ge"]) if "ge" in md else "(" + str(md["gt"]) if "gt" in md else None
    hi = str(md["le"]) + "]" if "le" in md else str(md["lt"]) + ")" if "lt" in md else None
    if lo and hi:
        return f"in {lo}, {hi}"
    if lo:
        return (">= " if lo[0] == "[" else "> ") + lo[1:]
    if hi:
        return ("<= " if hi[-1] == "]" else "< ") + hi[:-1]
    return ""


def to_plain(obj: Any) -> Any:
    """A converted dataclass (tree) -> plain dicts/lists (what factories and checkpoints take)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj
