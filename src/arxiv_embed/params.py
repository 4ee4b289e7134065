"""Typed access to ``params.yaml``.

Each stage declares a frozen dataclass for its section and loads it with :func:`load_section`. The active
profile (``meta.profile``) may override any key of any section through ``profiles.<profile>.<section>``, which
is how the small CPU profile shrinks the default GPU sizes. A missing or unknown key fails at start.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from arxiv_embed.text import TextMode

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(ValueError):
    """A params section does not match the dataclass that reads it."""


def read_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read the whole params file."""
    with open(path, encoding="utf-8") as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return params


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_section(params: dict[str, Any], name: str) -> dict[str, Any]:
    """Return section ``name`` with the active profile's overrides applied."""
    if name not in params:
        raise ParamsError(f"params: missing section '{name}'")
    section = params[name]
    profile = (params.get("meta") or {}).get("profile")
    profiles = params.get("profiles") or {}
    if profile is not None and profile not in profiles:
        raise ParamsError(f"params: meta.profile={profile!r} is not one of {sorted(profiles)}")
    override = (profiles.get(profile) or {}).get(name) if profile else None
    if override and isinstance(section, dict):
        section = _merge(section, override)
    return section


def _build(cls: type[T], data: Any, where: str) -> T:
    if not isinstance(data, dict):
        raise ParamsError(f"params: '{where}' must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(f"params: unknown key(s) in '{where}': {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in data:
            no_default = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            if no_default:
                raise ParamsError(f"params: missing key '{where}.{name}'")
            continue
        value = data[name]
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            value = _build(hint, value, f"{where}.{name}")
        else:
            _check_type(value, hint, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def _check_type(value: Any, hint: Any, where: str) -> None:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        errors = []
        for option in options:
            try:
                _check_type(value, option, where)
                return
            except ParamsError as e:
                errors.append(str(e))
        raise ParamsError(f"params: '{where}' = {value!r} does not match {hint}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ParamsError(f"params: '{where}' = {value!r} must be one of {list(typing.get_args(hint))}")
        return
    if hint is type(None):
        if value is not None:
            raise ParamsError(f"params: '{where}' must be null")
        return
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ParamsError(f"params: '{where}' must be a list")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"params: '{where}' must be a mapping")
        return
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is Any:
        ok = True
    elif isinstance(hint, type):
        ok = isinstance(value, hint)
    else:
        ok = True
    if not ok:
        raise ParamsError(f"params: '{where}' = {value!r} must be of type {getattr(hint, '__name__', hint)}")


def load_section(cls: type[T], name: str, params: dict[str, Any] | None = None) -> T:
    """Load section ``name`` of ``params`` (default: ./params.yaml) into the frozen dataclass ``cls``."""
    params = read_params() if params is None else params
    return _build(cls, resolve_section(params, name), name)


@dataclass(frozen=True)
class Paths:
    """The ``paths:`` block: every file or folder the pipeline reads or writes."""

    prepared: str
    split_dir: str
    pairs_dir: str
    model_dir: str
    classifier_dir: str
    onnx_dir: str
    faiss_dir: str
    metrics_dir: str
    plots_dir: str
    raw_dir: str = "data/raw"


@dataclass(frozen=True)
class Meta:
    """Settings shared by all stages."""

    profile: str
    seed: int
    base_model: str
    text_mode: TextMode
    max_seq_length: int = (
        256  # tokens per text when encoding for evaluation, the classifier, ONNX and the index
    )
    use_gcs: bool = False
    gcs_bucket: str = ""
    gcs_prefix: str = ""


def load_common(params: dict[str, Any] | None = None) -> tuple[Paths, Meta]:
    """The ``paths`` and ``meta`` sections every stage reads."""
    params = read_params() if params is None else params
    return load_section(Paths, "paths", params), load_section(Meta, "meta", params)


@dataclass(frozen=True)
class IREvalParams:
    """The ``ir_eval`` section: the retrieval protocol, shared by every stage that reports precision@k."""

    n_queries: int
    n_corpus: int
    batch_size: int


@dataclass(frozen=True)
class LogregParams:
    """The ``logreg`` section: the classification protocol, shared with the TF-IDF baseline."""

    C: float
    max_iter: int
    max_train_papers: int | None
    max_test_papers: int | None
    batch_size: int
