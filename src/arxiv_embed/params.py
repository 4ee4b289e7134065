"""Typed, validated access to ``params.yaml``.

``params.yaml`` is composed by DVC from ``conf/`` (Hydra: ``conf/config.yaml`` plus the profile chosen with
``-S profile=cpu``, then every other ``-S key=value`` on top), so the file holds the values that run and DVC
records exactly those. This module is the schema of that file:

* :class:`Params` names every section and key, with its type and allowed range; :func:`load_params` checks the
  whole file (an unknown section or key, a wrong type, a value out of range or two values that contradict each
  other) and fails with one line per problem naming the key, the value and what is allowed;
* :func:`stage_params` is what a stage calls: the whole file checked, then a view of it that lets the stage read
  only the keys ``dvc.yaml`` lists for it, so the params DVC tracks for a stage are the ones it reads.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import os
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

import yaml
from annotated_types import Ge, Gt, Le, Lt

from arxiv_embed.oai import DEFAULT_BASE_URL
from arxiv_embed.text import TextMode

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")
DEFAULT_PIPELINE = Path("dvc.yaml")
REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = "conf"
# ARXIV_EMBED_PARAMS_TRACE=<file>: every key a stage reads is appended to <file> as "stage key" lines (tests).
TRACE_ENV = "ARXIV_EMBED_PARAMS_TRACE"

# Constrained numbers: Annotated[int, Ge(1)] reads "an integer >= 1".
Positive = Annotated[int, Ge(1)]
NonNegative = Annotated[int, Ge(0)]
Fraction = Annotated[float, Ge(0), Lt(1)]
OpenFraction = Annotated[float, Gt(0), Lt(1)]
Seed = Annotated[int, Ge(0), Le(2**32 - 1)]
Cosine = Annotated[float, Ge(-1), Le(1)]


class ParamsError(ValueError):
    """params.yaml does not match the schema: one line per problem."""


def read_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read the whole params file."""
    with open(path, encoding="utf-8") as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return params


# ---------------------------------------------------------------------------------------------------------
# Checking values against dataclasses


class _Problems(list[str]):
    def add(self, where: str, value: Any, allowed: str) -> None:
        self.append(f"params: {where} = {_show(value)}: {allowed}")


def _show(value: Any) -> str:
    if isinstance(value, datetime.date):
        return value.isoformat()
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(hint: Any) -> str:
    """What a type hint allows, in words."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *bounds = typing.get_args(hint)
        words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        limits = [
            f"{word} {getattr(bound, attr)}"
            for bound in bounds
            for attr, word in words.items()
            if hasattr(bound, attr)
        ]
        return f"{_describe(base)} {' and '.join(limits)}".strip()
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if hint in names:
        return names[hint]
    if hint is datetime.date:
        return "a date"
    return getattr(hint, "__name__", str(hint))


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the type ``hint`` with its bounds (dataclasses excepted: see _build)."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *bounds = typing.get_args(hint)
        if not _matches(value, base):
            return False
        for bound in bounds:
            if isinstance(bound, Ge) and not value >= bound.ge:
                return False
            if isinstance(bound, Gt) and not value > bound.gt:
                return False
            if isinstance(bound, Le) and not value <= bound.le:
                return False
            if isinstance(bound, Lt) and not value < bound.lt:
                return False
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return isinstance(value, list | tuple) and all(_matches(v, args[0]) for v in value if args)
    if origin is dict:
        args = typing.get_args(hint)
        return isinstance(value, dict) and all(
            _matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items() if args
        )
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is Any:
        return True
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _dataclass_hint(hint: Any) -> type | None:
    return hint if dataclasses.is_dataclass(hint) and isinstance(hint, type) else None


def _build(cls: type[T], data: Any, where: str, problems: _Problems) -> T | None:
    """``data`` as a ``cls`` instance, or None with the reasons appended to ``problems``."""
    if not isinstance(data, dict):
        problems.add(where, data, "must be a mapping")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    start = len(problems)
    for name in sorted(set(data) - set(fields), key=str):
        close = difflib.get_close_matches(str(name), list(fields), n=1)
        hint = f"did you mean '{_join(where, close[0])}'? " if close else ""
        what = f"key '{_join(where, name)}'" if where else f"section '{name}'"
        known = f"the keys of '{where}' are" if where else "the sections are"
        problems.append(f"params: unknown {what} ({hint}{known}: {', '.join(fields)})")
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(where, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"params: missing {'key' if where else 'section'} '{key}'")
            continue
        value, hint = data[name], hints[name]
        nested = _dataclass_hint(hint)
        if nested is not None:
            value = _build(nested, value, key, problems)
        elif not _matches(value, hint):
            problems.add(key, value, f"must be {_describe(hint)}")
        kwargs[name] = value
    if len(problems) > start:
        return None
    try:
        return cls(**kwargs)
    except ParamsError as e:  # a check across keys in __post_init__
        problems.extend(str(e).splitlines())
        return None


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _fail(message: str) -> typing.NoReturn:
    raise ParamsError(message)


def load_section(cls: type[T], name: str, params: dict[str, Any] | None = None) -> T:
    """Section ``name`` of ``params`` (default: ./params.yaml) as the frozen dataclass ``cls``."""
    params = read_params() if params is None else params
    if name not in params:
        raise ParamsError(f"params: missing section '{name}'")
    problems = _Problems()
    built = _build(cls, params[name], name, problems)
    if built is None:
        raise ParamsError("\n".join(problems))
    return built


# ---------------------------------------------------------------------------------------------------------
# The schema of params.yaml


@dataclass(frozen=True)
class Paths:
    """``paths``: every file or folder the pipeline reads or writes (dvc.yaml reads them as ``${paths.x}``)."""

    prepared: str
    split_dir: str
    pairs_dir: str
    model_dir: str  # the fine-tuned model (train)
    embedder_dir: str  # the model evaluated, exported and indexed: fine-tuned + adapter (adapter)
    embeddings_dir: str  # embeddings of the adapter's train papers, reused by logreg
    classifier_dir: str
    onnx_dir: str
    faiss_dir: str
    metrics_dir: str
    plots_dir: str
    raw_dir: str = "data/raw"


@dataclass(frozen=True)
class Meta:
    """``meta``: settings shared by several stages."""

    seed: Seed
    base_model: str
    text_mode: TextMode
    max_seq_length: Annotated[int, Ge(8), Le(8192)]  # tokens per text: training, evaluation, ONNX, index
    use_gcs: bool = False  # where the data lives (arxiv_embed.storage), not what it is
    gcs_bucket: str = ""
    gcs_prefix: str = ""

    def __post_init__(self) -> None:
        if not self.base_model.strip():
            _fail("params: meta.base_model = '': must name a model (hub id or folder)")


@dataclass(frozen=True)
class OaiSourceParams:
    """``prepare.source.oai``: what to harvest from arXiv's OAI-PMH interface."""

    sets: list[str] = field(default_factory=lambda: ["cs"])
    from_date: str | datetime.date | None = None  # YAML reads an unquoted 2024-01-01 as a date
    until_date: str | datetime.date | None = None
    base_url: str = DEFAULT_BASE_URL
    delay: Annotated[float, Ge(0)] = 3.0


@dataclass(frozen=True)
class HfSourceParams:
    """``prepare.source.hf``: a Hugging Face dataset (hub id or local folder) streamed with ``datasets``.

    ``columns`` renames dataset columns to snapshot names (e.g. ``{summary: abstract}``).
    """

    dataset: str = ""
    config: str | None = None
    split: str = "train"
    columns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceParams:
    """``prepare.source``: where raw metadata comes from.

    ``kind: file`` streams ``uri`` (a path or fsspec URL, plain or gzip); a relative path is relative to the
    repository, also from a temporary experiment workspace; ``oai`` harvests arXiv over OAI-PMH into
    ``<work_dir>/oai-<query key>/records.jsonl`` (resumable) and streams that; ``hf`` streams a Hugging Face
    dataset.
    """

    kind: Literal["file", "oai", "hf"] = "file"
    uri: str = ""
    oai: OaiSourceParams = field(default_factory=OaiSourceParams)
    hf: HfSourceParams = field(default_factory=HfSourceParams)

    def __post_init__(self) -> None:
        if self.kind == "file" and not self.uri.strip():
            _fail(
                "params: prepare.source.uri = '': give a snapshot path or URL (prepare.source.kind = 'file')"
            )
        if self.kind == "hf" and not self.hf.dataset.strip():
            _fail("params: prepare.source.hf.dataset = '': give a hub id or a dataset folder (kind = 'hf')")


@dataclass(frozen=True)
class PrepareParams:
    source: SourceParams
    min_abstract_chars: NonNegative
    min_papers_per_subject: Positive
    max_papers_per_subject: Positive | None  # cap per subject, after min_papers_per_subject (null: none)
    max_text_chars: Annotated[int, Ge(100)] | None  # titles and abstracts cut here (counted); null: never
    max_unusable_fraction: Fraction  # fail when a larger share of the lines cannot be read


@dataclass(frozen=True)
class SplitParams:
    val_fraction: Fraction
    test_fraction: OpenFraction

    def __post_init__(self) -> None:
        if self.val_fraction + self.test_fraction >= 1:
            _fail(
                f"params: split.val_fraction + split.test_fraction = {self.val_fraction + self.test_fraction:g}: "
                "must be < 1, leaving papers to train on"
            )


@dataclass(frozen=True)
class PairsParams:
    n_pairs: Positive  # (anchor, positive) pairs for the MNRL losses
    n_contrastive: NonNegative  # labelled pairs for the contrastive losses (0: none)
    contrastive_positive_fraction: OpenFraction  # share of same-subject (label 1) contrastive pairs
    sampling: Literal["proportional", "balanced"]
    hard_negatives: bool


@dataclass(frozen=True)
class TfidfParams:
    max_features: Positive
    ngram_max: Annotated[int, Ge(1), Le(5)]
    min_df: Positive
    sublinear_tf: bool


Loss = Literal["subject_mnrl", "supcon", "mnrl", "cached_mnrl", "contrastive", "online_contrastive", "none"]
CONTRASTIVE_LOSSES = ("contrastive", "online_contrastive")


@dataclass(frozen=True)
class TrainParams:
    loss: Loss
    max_pairs: Positive | None  # use the first n pairs of the pairs file (null: all)
    batch_size: Positive
    mini_batch_size: Positive  # cached_mnrl: forward chunk size (memory), independent of batch_size
    learning_rate: Annotated[float, Gt(0), Le(1)]
    epochs: Annotated[float, Gt(0)]
    max_steps: Annotated[int, Ge(-1)]  # > 0 overrides epochs; -1 (or 0): epochs decide
    warmup_ratio: Fraction
    weight_decay: Annotated[float, Ge(0)]
    precision: Literal["fp32", "fp16", "bf16"]
    batch_sampler: Literal["no_duplicates", "batch_sampler", "group_by_label"]
    contrastive_margin: Annotated[float, Gt(0), Le(2)]  # cosine distance, 0 < margin <= 2
    supcon_temperature: Annotated[float, Gt(0), Le(1)]  # loss supcon: softmax temperature
    matryoshka_dims: list[Annotated[int, Ge(1)]]  # non-empty: MatryoshkaLoss over these dims (largest first)
    eval_queries: Positive
    eval_corpus: Positive
    eval_steps: NonNegative  # 0: no validation during training
    logging_steps: Positive
    dataloader_workers: NonNegative
    launcher: str = "python"  # how dvc.yaml starts the stage (its cmd): python | torchrun --nproc_per_node N

    def __post_init__(self) -> None:
        dims = self.matryoshka_dims
        if dims and (sorted(set(dims), reverse=True) != list(dims)):
            _fail(f"params: train.matryoshka_dims = {dims}: must be distinct and in decreasing order")
        if self.batch_sampler == "group_by_label" and self.loss not in ("subject_mnrl", "supcon"):
            _fail(
                f"params: train.batch_sampler = 'group_by_label' needs subject labels: train.loss = {self.loss!r} "
                "has none (use subject_mnrl or supcon)"
            )
        if self.loss not in (*CONTRASTIVE_LOSSES, "none") and self.batch_size < 2:
            _fail(
                f"params: train.batch_size = {self.batch_size}: must be >= 2 for train.loss = {self.loss!r} "
                "(in-batch negatives)"
            )


@dataclass(frozen=True)
class AdapterParams:
    """``adapter``: a linear map (or residual MLP) over the fine-tuned embeddings, trained with supervised
    contrastive learning."""

    method: Literal["none", "supcon"]  # none: the fine-tuned model goes on unchanged
    n_papers: Annotated[int, Ge(2)]  # stratified train papers embedded to fit it (reused by logreg)
    encoder: Literal[
        "onnx_int8", "torch"
    ]  # how they are embedded: int8 ONNX (CPU) | the model (fp16 on a GPU)
    encode_batch_size: Positive
    temperature: Annotated[float, Gt(0), Le(1)]
    epochs: Positive
    batch_size: Annotated[int, Ge(2)]  # papers per step of the fit
    learning_rate: Annotated[float, Gt(0), Le(1)]
    weight_decay: Annotated[float, Ge(0)]
    classifier_weight: Annotated[
        float, Ge(0)
    ]  # > 0: a subject classifier head trained alongside (cross-entropy)
    matryoshka_dims: list[Annotated[int, Ge(1)]]  # non-empty: the loss averaged over these prefixes
    hidden: Annotated[int, Ge(0)]  # 0: a linear map; > 0: a residual MLP with this many hidden units
    val_queries: Positive  # validation retrieval before and after the fit (val split)
    val_corpus: Annotated[int, Ge(10)]

    def __post_init__(self) -> None:
        dims = self.matryoshka_dims
        if dims and (sorted(set(dims), reverse=True) != list(dims)):
            _fail(f"params: adapter.matryoshka_dims = {dims}: must be distinct and in decreasing order")


@dataclass(frozen=True)
class IREvalParams:
    """``ir_eval``: the retrieval protocol, shared by every stage that reports precision@k."""

    n_queries: Positive
    n_corpus: Annotated[int, Ge(10)]
    batch_size: Positive
    matryoshka_dims: list[
        Annotated[int, Ge(1)]
    ]  # also measured with vectors cut to these dims (API dimensions)

    def __post_init__(self) -> None:
        dims = self.matryoshka_dims
        if sorted(set(dims), reverse=True) != list(dims):
            _fail(f"params: ir_eval.matryoshka_dims = {dims}: must be distinct and in decreasing order")


@dataclass(frozen=True)
class LogregParams:
    """``logreg``: the classification protocol, shared with the TF-IDF baseline."""

    C: Annotated[float, Gt(0)]
    max_iter: Positive
    max_train_papers: Positive | None  # train papers of every model compared (TF-IDF, untuned, fine-tuned)
    max_test_papers: Positive | None
    batch_size: Positive
    classifier_train_papers: (
        Positive | None
    )  # the served classifier: up to this many (adapter's cached papers)
    classifier_C: (
        Annotated[float, Gt(0)] | None
    )  # the served classifier's C when it has more papers (null: C)


@dataclass(frozen=True)
class OnnxExportParams:
    n_parity_texts: Positive  # test papers (stratified sample) compared with Sentence Transformers
    min_cosine_fp32: Cosine  # gate on the lowest cosine
    min_mean_cosine_int8: Cosine  # gate on the mean cosine
    max_precision_drop_int8: Annotated[float, Ge(0), Le(1)]  # gate: fp32 precision@10 - int8 precision@10
    batch_size: Positive


@dataclass(frozen=True)
class FaissBuildParams:
    encoder: Literal["onnx", "torch"]
    model_file: Literal["model_int8.onnx", "model.onnx"]
    index: Literal["flat", "ivf", "ivf_sq8", "ivf_pq", "ivf_pq_sq8", "hnsw", "hnsw_sq8"]
    dimension: Positive | None  # vectors cut to this size (one of ir_eval.matryoshka_dims); null: the model's
    max_papers: Positive | None
    batch_size: Positive
    torch_batch_size: Positive
    threads: Positive | None
    ivf_nlist: Positive
    ivf_nprobe: Positive
    pq_m: Positive  # ivf_pq*: sub-quantizers per vector (must divide the dimension)
    pq_bits: Annotated[int, Ge(1), Le(16)]  # ivf_pq: bits per sub-quantizer code
    refine_k_factor: Positive  # ivf_pq_sq8: k x this many fast-scan PQ candidates re-ranked with SQ8 codes
    hnsw_m: Annotated[int, Ge(2)]
    hnsw_ef_construction: Positive
    hnsw_ef_search: Positive
    n_recall_queries: Positive

    def __post_init__(self) -> None:
        if self.index.startswith("ivf") and self.ivf_nprobe > self.ivf_nlist:
            _fail(
                f"params: faiss_build.ivf_nprobe = {self.ivf_nprobe}: must be <= faiss_build.ivf_nlist "
                f"({self.ivf_nlist})"
            )


@dataclass(frozen=True)
class Params:
    """The whole of params.yaml."""

    paths: Paths
    meta: Meta
    prepare: PrepareParams
    split: SplitParams
    pairs: PairsParams
    tfidf_baseline: TfidfParams
    train: TrainParams
    adapter: AdapterParams
    ir_eval: IREvalParams
    logreg: LogregParams
    onnx_export: OnnxExportParams
    faiss_build: FaissBuildParams

    def __post_init__(self) -> None:
        cut = self.faiss_build.dimension
        if cut is not None and cut not in self.ir_eval.matryoshka_dims:
            _fail(
                f"params: faiss_build.dimension = {cut}: must be null (the model's) or one of "
                f"ir_eval.matryoshka_dims {self.ir_eval.matryoshka_dims}, the sizes the model is evaluated at"
            )
        if self.train.loss in CONTRASTIVE_LOSSES and self.pairs.n_contrastive < 2:
            _fail(
                f"params: train.loss = {self.train.loss!r} trains on contrastive pairs, but pairs.n_contrastive "
                f"= {self.pairs.n_contrastive}: set pairs.n_contrastive >= 2 or choose an MNRL loss"
            )


def check_params(data: dict[str, Any]) -> Params:
    """``data`` (a parsed params.yaml) as :class:`Params`, or :class:`ParamsError` listing every problem."""
    problems = _Problems()
    built = _build(Params, data, "", problems)
    if built is None or problems:
        raise ParamsError("\n".join(dict.fromkeys(problems)) or "params: invalid")
    return built


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and check the whole params file."""
    return check_params(read_params(path))


def load_common(params: dict[str, Any] | None = None) -> tuple[Paths, Meta]:
    """The ``paths`` and ``meta`` sections (for scripts outside the pipeline)."""
    params = read_params() if params is None else params
    return load_section(Paths, "paths", params), load_section(Meta, "meta", params)


# ---------------------------------------------------------------------------------------------------------
# What a stage may read: the keys dvc.yaml lists for it


def find_pipeline(pipeline: str | Path = DEFAULT_PIPELINE) -> Path | None:
    """``dvc.yaml`` of the working folder, else the repository's (stages run from elsewhere in tests)."""
    for candidate in (Path(pipeline), REPO_ROOT / DEFAULT_PIPELINE.name):
        if candidate.is_file():
            return candidate
    return None


def listed_params(stage: str, pipeline: str | Path = DEFAULT_PIPELINE) -> tuple[str, ...]:
    """The params keys ``dvc.yaml`` lists for ``stage`` (``params.yaml`` entries only)."""
    path = find_pipeline(pipeline)
    if path is None:
        raise ParamsError(f"params: no dvc.yaml found to tell which params stage '{stage}' reads")
    stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages") or {}
    if stage not in stages:
        raise ParamsError(f"params: {path} has no stage '{stage}'")
    keys: list[str] = []
    for entry in stages[stage].get("params") or []:
        if isinstance(entry, str):
            keys.append(entry)
        else:
            for file, file_keys in entry.items():
                if Path(file).name == DEFAULT_PARAMS.name:
                    keys.extend(file_keys or [""])  # `params.yaml:` with no keys: the whole file
    return tuple(keys)


class _View:
    """A read-only view of a params dataclass that lets a stage read only the keys it declares."""

    __slots__ = ("_allowed", "_obj", "_stage", "_trace", "_where")

    def __init__(self, obj: Any, where: str, allowed: tuple[str, ...], stage: str, trace: str | None):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_where", where)
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_trace", trace)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._obj, name)
        key = f"{self._where}.{name}"
        if dataclasses.is_dataclass(value) and any(a.startswith(key + ".") for a in self._allowed):
            return _View(value, key, self._allowed, self._stage, self._trace)
        if not any(a in ("", key) or key.startswith(a + ".") for a in self._allowed):
            raise ParamsError(
                f"params: stage '{self._stage}' reads '{key}', which dvc.yaml does not list in its params; "
                "add it there so DVC reruns the stage when it changes"
            )
        if self._trace:
            with open(self._trace, "a", encoding="utf-8") as f:
                f.write(f"{self._stage} {key}\n")
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field '{name}'")

    def __repr__(self) -> str:
        return f"<params {self._where} of stage {self._stage}>"


@dataclass(frozen=True)
class StageParams:
    """What :func:`stage_params` returns: ``paths`` whole (dvc.yaml tracks them as deps and outs) and the other
    sections as views that raise on a key the stage does not list."""

    stage: str
    paths: Paths
    meta: Meta
    prepare: PrepareParams
    split: SplitParams
    pairs: PairsParams
    tfidf_baseline: TfidfParams
    train: TrainParams
    adapter: AdapterParams
    ir_eval: IREvalParams
    logreg: LogregParams
    onnx_export: OnnxExportParams
    faiss_build: FaissBuildParams


def stage_params(
    stage: str, path: str | Path = DEFAULT_PARAMS, pipeline: str | Path = DEFAULT_PIPELINE
) -> StageParams:
    """The checked params file, as stage ``stage`` may read it (the keys dvc.yaml lists for it)."""
    params = load_params(path)
    allowed = listed_params(stage, pipeline)
    trace = os.environ.get(TRACE_ENV) or None
    sections: dict[str, Any] = {}
    for f in dataclasses.fields(Params):
        value = getattr(params, f.name)
        sections[f.name] = value if f.name == "paths" else _View(value, f.name, allowed, stage, trace)
    return StageParams(stage=stage, **sections)


def run_stage_check(stage: str, path: str | Path = DEFAULT_PARAMS) -> StageParams:
    """:func:`stage_params`, exiting with the problems (one per line) instead of a traceback."""
    try:
        return stage_params(stage, path)
    except ParamsError as e:
        raise SystemExit(f"{stage}: {e}".replace("\n", f"\n{stage}: ")) from None


# ---------------------------------------------------------------------------------------------------------
# Composing params.yaml from conf/ (what `dvc exp run` does, for scripts and tests)


def compose(
    overrides: Sequence[str] = (), conf_dir: str | Path | None = None, config_name: str = "config"
) -> dict[str, Any]:
    """The params ``dvc exp run -S ...`` would write: ``conf/config.yaml`` with Hydra ``overrides`` applied."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    conf = Path(conf_dir) if conf_dir is not None else REPO_ROOT / CONF_DIR
    with initialize_config_dir(str(conf.resolve()), version_base=None):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    return cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))


def compose_yaml(overrides: Iterable[str] = (), conf_dir: str | Path | None = None) -> str:
    """:func:`compose` as the text DVC writes to params.yaml (byte for byte)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(compose(list(overrides), conf_dir)))
