"""One configuration loader for every recipe: typed dataclasses, YAML files and ``key=value`` overrides.

A recipe's schema is a dataclass whose fields carry their type and default. A field whose type is
itself a dataclass is a *group* (``train.lr`` reaches ``TrainConfig.train.lr``); a ``dict`` field
is free-form (``method_options.num_experts=8`` sets one entry; its keys belong to someone else who
checks them later). Values are read as YAML scalars (``strategies=[lora,full]`` is a list) and then
checked against the field's annotation, converting only where lossless; an error names the key.
A string field keeps the text as written (``output_dir=010`` is ``'010'``, not YAML's octal 8), and
a key written twice in one YAML mapping is an error (:mod:`covft.utils.config_yaml`).
A key that is not in the schema is an error naming the closest valid key, so a misspelt
``train.lr_sheduler=...`` can never run silently with the default.

- :func:`load` reads a YAML file (or nothing) plus overrides into a schema instance;
- :func:`from_dict` builds an instance from a mapping (a YAML document, a saved config);
- :func:`override` returns a copy of an existing instance (frozen ones too) with overrides applied,
  touching only the fields named;
- :func:`save` writes the resolved configuration as YAML that :func:`load` reads back to an equal one.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from covft.errors import UserError
from covft.utils import config_yaml
from covft.utils.config_yaml import WRITTEN, plain
from covft.utils.hints import did_you_mean
from covft.utils.io import write_text_atomic

T = TypeVar("T")

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used; the message says which key and how to fix it."""

    exit_status = 2  # like a usage error


def _is_group(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _is_free_form(annotation: Any) -> bool:
    return annotation is dict or get_origin(annotation) is dict


def _field_hints(schema: type) -> dict[str, Any]:
    hints = get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def valid_keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key ``schema`` accepts (groups expanded, free-form mappings as ``name.*``)."""
    keys: list[str] = []
    for name, annotation in _field_hints(schema).items():
        if _is_group(annotation):
            keys.extend(valid_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}.*" if _is_free_form(annotation) else f"{prefix}{name}")
    return keys


def unknown_key(schema: type, key: str, source: str) -> ConfigError:
    """The error for dotted ``key``, not in ``schema``: names the closest valid key and lists the
    valid keys of its group (all of them when the group itself is unknown)."""
    keys = valid_keys(schema)
    hint = did_you_mean(key, [k.removesuffix(".*") for k in keys], cutoff=0.0)
    group = key.rpartition(".")[0]
    siblings = [k for k in keys if group and k.startswith(f"{group}.")]
    return ConfigError(
        f"unknown config key {key!r} in {source}.{hint} Valid keys: {', '.join(siblings or keys)}"
    )


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` checked against a field's type annotation, converted where lossless."""
    origin = get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return _coerce_union(value, get_args(annotation), key)
    if origin is Literal:
        allowed = get_args(annotation)
        if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
            raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
        return plain(value)
    if _is_group(annotation):
        if isinstance(value, annotation):
            return value
        first = dataclasses.fields(annotation)[0].name
        raise ConfigError(
            f"cannot override {key!r} with {value!r}: it is a group of settings; "
            f"set its fields instead (e.g. {key}.{first}=...)"
        )
    if _is_free_form(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        args = get_args(annotation)
        if len(args) == 2 and args[1] is not Any:
            return {plain(k): coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
        return plain(dict(value))
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = get_args(annotation) or (Any,)
        return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    return _coerce_scalar(value, annotation, key)


def _coerce_union(value: Any, options: tuple[Any, ...], key: str) -> Any:
    if value is None and type(None) in options:
        return None
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return coerce(value, option, key)
        except ConfigError as exc:
            errors.append(str(exc))
    if type(None) in options and isinstance(value, str) and value.lower() == "none":
        return None  # ``vision_hidden=none``: YAML's null is ``null``, but people write none
    raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")


def _coerce_scalar(value: Any, annotation: Any, key: str) -> Any:
    if annotation is bool:
        if value in (0, 1) and not isinstance(value, float):
            return bool(value)
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return int(value)
    if annotation is float:
        # YAML 1.1 reads ``1e-4`` (no dot) as a string; it is a number to anyone writing a recipe.
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if isinstance(value, WRITTEN):
            return value.text  # as written: YAML reads 010 as 8 and 1.10 as 1.1
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    return plain(value)


def _kwargs(schema: type, values: Any, source: str, root: type, prefix: str = "") -> dict[str, Any]:
    """Checked constructor arguments of ``schema`` (a group of ``root`` at ``prefix``) from ``values``."""
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{prefix.rstrip('.') or 'the config'} in {source} must be a mapping, got {values!r}"
        )
    hints = _field_hints(schema)
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in hints:
            raise unknown_key(root, key, source)
        annotation = hints[name]
        if _is_group(annotation) and (value is None or isinstance(value, Mapping)):
            kwargs[name] = annotation(**_kwargs(annotation, value or {}, source, root, f"{key}."))
        else:
            kwargs[name] = coerce(value, annotation, key)
    return kwargs


def _assign(node: Mapping[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """A copy of ``node`` with ``value`` at ``path`` (mappings on the way copied, or created)."""
    result = dict(node)
    if len(path) == 1:
        result[path[0]] = value
    else:
        child = result.get(path[0])
        result[path[0]] = _assign(child if isinstance(child, Mapping) else {}, path[1:], value)
    return result


def from_dict(schema: type[T], raw: Mapping[str, Any] | None, source: str = "<dict>") -> T:
    """An instance of ``schema`` from a (nested) mapping, every key and value checked."""
    return schema(**_kwargs(schema, raw if raw is not None else {}, source, schema))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (``["a", "b"]``, parsed value); values are read as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value (e.g. train.lr=1e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = config_yaml.load(raw) if raw.strip() else None
    except config_yaml.DuplicateKeyError as exc:
        raise ConfigError(f"override {text!r} gives key {exc.key!r} twice") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc})") from exc
    return key.split("."), value


def _check_key(schema: type, path: list[str], source: str) -> None:
    """Raise :func:`unknown_key`'s error unless ``path`` names a field of ``schema`` (or an entry of
    one of its free-form mappings)."""
    node = schema
    for depth, part in enumerate(path):
        hints = _field_hints(node)
        if part not in hints:
            raise unknown_key(schema, ".".join(path), source)
        if _is_free_form(hints[part]):
            return
        if depth < len(path) - 1 and not _is_group(hints[part]):
            raise unknown_key(schema, ".".join(path), source)
        node = hints[part]


def apply_overrides(schema: type, raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``raw`` (a mapping for ``schema``) with ``key=value`` overrides set (a new mapping).

    An override replaces the value at its key: ``method_options={}`` empties the mapping,
    ``method_options.r=8`` sets one entry.
    """
    result = copy.deepcopy(dict(raw))
    for text in overrides:
        path, value = parse_override(text)
        _check_key(schema, path, f"override {text!r}")
        result = _assign(result, path, value)
    return result


def override(instance: T, overrides: Iterable[str]) -> T:
    """A copy of ``instance`` (a dataclass, frozen or not) with ``key=value`` overrides applied.

    Only the named fields change (groups on the way are copied with :func:`dataclasses.replace`);
    every other value is the instance's own object.
    """
    for text in overrides:
        path, value = parse_override(text)
        source = f"override {text!r}"
        _check_key(type(instance), path, source)
        instance = _set(instance, path, value, source, type(instance))
    return instance


def _set(instance: T, path: list[str], value: Any, source: str, root: type, prefix: str = "") -> T:
    name, rest = path[0], path[1:]
    annotation = _field_hints(type(instance))[name]
    key = f"{prefix}{name}"
    if rest and _is_group(annotation):
        new = _set(getattr(instance, name), rest, value, source, root, f"{key}.")
    elif rest:  # an entry of a free-form mapping
        new = coerce(_assign(getattr(instance, name), rest, value), annotation, key)
    else:
        new = _kwargs(type(instance), {name: value}, source, root, prefix)[name]
    return dataclasses.replace(instance, **{name: new})


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML file of config keys, naming the file and line on a syntax error, a key given twice
    and text that is not UTF-8. Numbers keep their text for string fields (see the module's doc)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        raw = config_yaml.load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}). "
            "Fix: save it as UTF-8"
        ) from exc
    except config_yaml.DuplicateKeyError as exc:
        raise ConfigError(
            f"{path} gives key {exc.key!r} twice in one mapping (lines {exc.first_line} and {exc.line}); "
            "YAML would keep only the last. Fix: keep one of them"
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{path}{where} is not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must contain a mapping of config keys, got {type(raw).__name__}")
    return raw


def load(schema: type[T], path: str | os.PathLike[str] | None = None, overrides: Iterable[str] = ()) -> T:
    """``schema`` from a YAML file (or its defaults) plus ``key=value`` overrides."""
    raw = load_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "overrides"
    return from_dict(schema, apply_overrides(schema, raw, overrides), source)


def to_dict(instance: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-serialisable copy of a configuration."""
    return dataclasses.asdict(instance)


def save(instance: Any, path: str | os.PathLike[str]) -> Path:
    """Write the resolved configuration as YAML next to an output (it reloads to an equal one)."""
    return write_text_atomic(path, yaml.safe_dump(to_dict(instance), sort_keys=False))
