"""arxiv_embed.params: profile overrides, clear errors, type checks, and the repository's params.yaml."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from arxiv_embed.params import (
    IREvalParams,
    LogregParams,
    Meta,
    ParamsError,
    Paths,
    load_common,
    load_section,
    read_params,
    resolve_section,
)
from stages.faiss_build import FaissBuildParams
from stages.onnx_export import OnnxExportParams
from stages.pairs import PairsParams
from stages.prepare import PrepareParams
from stages.split import SplitParams
from stages.tfidf_baseline import TfidfParams
from stages.train import TrainParams

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Inner:
    depth: int = 1


@dataclass(frozen=True)
class Toy:
    name: str
    rate: float
    steps: int
    kind: Literal["a", "b"]
    limit: int | None
    tags: list[str]
    inner: Inner = field(default_factory=Inner)


BASE = {
    "meta": {"profile": "big"},
    "toy": {"name": "x", "rate": 0.5, "steps": 10, "kind": "a", "limit": None, "tags": []},
    "profiles": {"big": {}, "small": {"toy": {"steps": 2, "inner": {"depth": 3}}}},
}


def params(**toy: object) -> dict:
    p = copy.deepcopy(BASE)
    p["toy"].update(toy)
    return p


def test_load_section_builds_the_frozen_dataclass() -> None:
    toy = load_section(Toy, "toy", params())
    assert toy == Toy(name="x", rate=0.5, steps=10, kind="a", limit=None, tags=[], inner=Inner(1))
    with pytest.raises(AttributeError):
        toy.steps = 3  # type: ignore[misc]


def test_profile_overrides_are_merged_deeply() -> None:
    p = params(inner={"depth": 2})
    p["meta"]["profile"] = "small"
    toy = load_section(Toy, "toy", p)
    assert (toy.steps, toy.inner.depth, toy.rate) == (2, 3, 0.5)
    assert p["toy"]["steps"] == 10  # the params mapping itself is left as it is


def test_no_profile_means_no_overrides() -> None:
    p = params()
    del p["meta"]
    assert resolve_section(p, "toy")["steps"] == 10


def test_int_is_accepted_for_float() -> None:
    assert load_section(Toy, "toy", params(rate=1)).rate == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p["toy"].update(extra=1, bonus=2), "unknown key(s) in 'toy': bonus, extra"),
        (lambda p: p["toy"].pop("rate"), "missing key 'toy.rate'"),
        (lambda p: p.pop("toy"), "missing section 'toy'"),
        (lambda p: p["meta"].update(profile="huge"), "meta.profile='huge' is not one of ['big', 'small']"),
        (lambda p: p["toy"].update(steps="10"), "'toy.steps' = '10' must be of type int"),
        (lambda p: p["toy"].update(steps=2.5), "'toy.steps' = 2.5 must be of type int"),
        (lambda p: p["toy"].update(steps=True), "'toy.steps' = True must be of type int"),
        (lambda p: p["toy"].update(rate="fast"), "'toy.rate' = 'fast' must be of type float"),
        (lambda p: p["toy"].update(kind="c"), "'toy.kind' = 'c' must be one of ['a', 'b']"),
        (lambda p: p["toy"].update(limit="none"), "'toy.limit' = 'none' does not match"),
        (lambda p: p["toy"].update(tags="x"), "'toy.tags' must be a list"),
        (lambda p: p["toy"].update(inner=3), "'toy.inner' must be a mapping, got int"),
        (lambda p: p["toy"].update(inner={"deep": 1}), "unknown key(s) in 'toy.inner': deep"),
        (lambda p: p["profiles"]["big"].update(toy={"typo": 1}), "unknown key(s) in 'toy': typo"),
    ],
)
def test_bad_params_fail_with_a_clear_message(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    p = params()
    mutate(p)
    with pytest.raises(ParamsError) as e:
        load_section(Toy, "toy", p)
    assert message in str(e.value)


def test_read_params_rejects_a_non_mapping(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("- a\n- b\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        read_params(tmp_path / "params.yaml")


STAGE_SECTIONS = [
    (PrepareParams, "prepare"),
    (SplitParams, "split"),
    (PairsParams, "pairs"),
    (TfidfParams, "tfidf_baseline"),
    (TrainParams, "train"),
    (IREvalParams, "ir_eval"),
    (LogregParams, "logreg"),
    (OnnxExportParams, "onnx_export"),
    (FaissBuildParams, "faiss_build"),
    (Paths, "paths"),
    (Meta, "meta"),
]


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
@pytest.mark.parametrize(("cls", "section"), STAGE_SECTIONS, ids=[s for _, s in STAGE_SECTIONS])
def test_repository_params_load_for_every_stage(cls: type, section: str, profile: str) -> None:
    p = read_params(REPO / "params.yaml")
    p["meta"]["profile"] = profile
    assert isinstance(load_section(cls, section, p), cls)


def test_cpu_profile_shrinks_the_gpu_sizes() -> None:
    p = read_params(REPO / "params.yaml")
    gpu = {section: load_section(cls, section, p) for cls, section in STAGE_SECTIONS}
    p["meta"]["profile"] = "cpu"
    cpu = {section: load_section(cls, section, p) for cls, section in STAGE_SECTIONS}
    assert cpu["train"].batch_size < gpu["train"].batch_size
    assert cpu["pairs"].n_pairs < gpu["pairs"].n_pairs
    assert cpu["ir_eval"].n_corpus < gpu["ir_eval"].n_corpus
    assert cpu["train"].loss == gpu["train"].loss  # untouched keys keep their values
    # Every profile override names an existing section and keys of it.
    for profile, overrides in p["profiles"].items():
        for section, values in (overrides or {}).items():
            assert section in p, f"profiles.{profile}.{section}"
            assert set(values) <= set(p[section]), f"profiles.{profile}.{section}"


def test_load_common_reads_params_yaml_of_the_working_folder(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    p = read_params(REPO / "params.yaml")
    p["paths"]["metrics_dir"] = "elsewhere"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    monkeypatch.chdir(tmp_path)
    paths, meta = load_common()
    assert paths.metrics_dir == "elsewhere"
    assert meta.seed == p["meta"]["seed"]
