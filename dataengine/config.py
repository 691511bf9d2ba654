"""Typed configuration: one builder for every config dataclass (recipes, trainer, dedup, mixture, ...).

    build(cls, data, where)   a mapping -> cls, every field checked against its annotation
    override(data, "a.b=v")   the CLI's --set: a dotted key, the value read as YAML

The same rules and errors everywhere: an unknown key names the closest valid one; a value of the
wrong type names the key path, the type expected and what was given; a `Literal` field lists its
choices. A field with ``metadata={"merge": True}`` (a dict of per-kind defaults) takes a partial
mapping over its defaults, key by key. After a dataclass is built its `validate()`, when it has
one, runs at once, so a bad section fails while the config is read, before any work.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing

import yaml

from dataengine.errors import RecipeError


def fields_of(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def build(cls, data, where: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping with keys {fields_of(cls)}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RecipeError(f"{where}: unknown key {key!r}{hint} Allowed keys: {fields_of(cls)}")
    kwargs = {}
    for name, f in known.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(f"{where}: missing required key {name!r}")
            continue
        value = data[name]
        if f.metadata.get("merge") and isinstance(value, dict) and f.default_factory is not dataclasses.MISSING:
            value = {**f.default_factory(), **value}  # a partial mapping overrides the defaults key by key
        kwargs[name] = coerce(hints[name], value, f"{where}.{name}")
    obj = cls(**kwargs)
    if callable(getattr(obj, "validate", None)):
        obj.validate()
    return obj


def _number(value, where: str, kind: str):
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string; it is a number to anyone writing it
        try:
            return float(value)
        except ValueError:
            pass
    raise RecipeError(f"{where}: expected {kind}, got {value!r}")


def coerce(tp, value, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"{where}: expected one of {list(choices)}, got {value!r}{hint}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {type(value).__name__} ({value!r}); "
                              f"write a list, e.g. [{value!r}]")
        return [coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {type(value).__name__} ({value!r})")
        return {str(k): coerce(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else coerce(args[0], value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _number(value, where, "a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return value
    return value


def override(data: dict, item: str) -> dict:
    """One --set: ``dotted.key=value`` (the value read as YAML) written into the raw mapping `data`."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {item!r}: use KEY=VALUE with a dotted key, e.g. curate.filters.image_blur.min=20")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise RecipeError(f"--set {item!r}: the value is not valid YAML ({e})") from None
    node = data
    parts = key.strip().split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value
    return data
