"""arxiv_embed.params and conf/: what runs is what is recorded.

- ``-S key=value`` wins over the profile (the composition ``dvc exp run`` performs);
- the committed params.yaml is the composition of conf/, and dvc.lock records the same values;
- each stage reads only the keys dvc.yaml lists for it;
- a misspelt section or key, and every bad value, fails with one line naming the key, the value and the range.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from arxiv_embed.params import (
    DEFAULT_PARAMS,
    Params,
    ParamsError,
    check_params,
    compose,
    compose_yaml,
    listed_params,
    load_params,
    load_section,
    read_params,
    stage_params,
)
from arxiv_embed.sources import SourceParams

REPO = Path(__file__).resolve().parents[1]
STAGES = [
    "check_params",
    "prepare",
    "split",
    "pairs",
    "tfidf_baseline",
    "train",
    "adapter",
    "ir_eval",
    "logreg",
    "onnx_export",
    "faiss_build",
]


def committed() -> dict[str, Any]:
    return read_params(REPO / "params.yaml")


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(ParamsError) as e:
        check_params(data)
    return str(e.value)


# --- composition: profiles and -S -------------------------------------------------------------------------


def test_dvc_composes_params_yaml_as_compose_does(tmp_path: Path) -> None:
    """compose() is what `dvc exp run -S ...` writes (DVC's own function, same bytes)."""
    from dvc.utils.hydra import compose_and_dump

    overrides = ["profile=cpu", "train.max_pairs=8000"]
    out = tmp_path / "params.yaml"
    compose_and_dump(out, str(REPO / "conf"), None, "config", str(tmp_path), overrides)
    assert out.read_text() == compose_yaml(overrides)


def test_set_param_wins_over_the_profile() -> None:
    cpu = compose(["profile=cpu"])
    assert cpu["train"]["max_pairs"] == 2000  # the profile's value
    swept = compose(["profile=cpu", "train.max_pairs=8000", "meta.max_seq_length=64"])
    assert swept["train"]["max_pairs"] == 8000
    assert swept["meta"]["max_seq_length"] == 64
    assert swept["train"]["batch_size"] == cpu["train"]["batch_size"]  # the rest of the profile stays


def test_profiles_change_sizes_not_choices() -> None:
    cpu, gpu = check_params(compose(["profile=cpu"])), check_params(compose(["profile=gpu"]))
    assert cpu.train.batch_size < gpu.train.batch_size
    assert cpu.pairs.n_pairs < gpu.pairs.n_pairs
    assert cpu.ir_eval.n_corpus < gpu.ir_eval.n_corpus
    assert cpu.meta.max_seq_length < gpu.meta.max_seq_length
    assert cpu.train.loss == gpu.train.loss


def test_the_full_arxiv_index_goes_over_any_profile() -> None:
    for profile in ("cpu", "gpu"):
        plain, full = compose([f"profile={profile}"]), compose([f"profile={profile}", "index=full_arxiv"])
        assert check_params(full).faiss_build.index == "ivf_pq_sq8"
        assert full["faiss_build"]["ivf_nprobe"] == 256 and full["faiss_build"]["pq_m"] == 192
        # Only the index changes: the profile's sizes stay (max_papers included).
        assert {k: v for k, v in full.items() if k != "faiss_build"} == {
            k: v for k, v in plain.items() if k != "faiss_build"
        }
        assert full["faiss_build"]["max_papers"] == plain["faiss_build"]["max_papers"]


def test_an_unknown_set_param_fails() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match=r"train\.max_pair"):
        compose(["profile=cpu", "train.max_pair=8000"])
    with pytest.raises(ConfigCompositionException, match=r"meta\.profile"):
        compose(["meta.profile=cpu"])  # the old way to pick a profile is refused, not ignored


def test_committed_params_yaml_is_the_default_composition() -> None:
    """params.yaml is generated: conf/ with no -S (the CPU profile) gives it byte for byte."""
    assert (REPO / "params.yaml").read_text() == compose_yaml([])
    assert compose([]) == compose(["profile=cpu"])


def test_committed_dvc_lock_records_the_params_yaml_values() -> None:
    """dvc.lock, dvc exp show and dvc params diff see the values of params.yaml: the run they describe."""
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    params = committed()
    for stage, entry in lock["stages"].items():
        for key, value in (entry.get("params") or {}).get("params.yaml", {}).items():
            expected: Any = params
            for part in key.split("."):
                expected = expected[part]
            assert value == expected, (
                f"dvc.lock: {stage} ran with {key}={value!r}, params.yaml has {expected!r}"
            )
        listed = {k for k in listed_params(stage, REPO / "dvc.yaml") if k}
        recorded = set((entry.get("params") or {}).get("params.yaml", {}))
        assert listed == recorded or listed == {""} or stage == "check_params", stage


def test_a_misspelt_profile_section_fails_naming_it(tmp_path: Path) -> None:
    conf = shutil.copytree(REPO / "conf", tmp_path / "conf")
    cpu = conf / "profile" / "cpu.yaml"
    cpu.write_text(cpu.read_text().replace("\npairs:\n", "\npair:\n"))
    message = problems(compose([], conf))
    assert "unknown section 'pair' (did you mean 'pairs'?" in message


# --- the schema -------------------------------------------------------------------------------------------


def test_committed_params_pass() -> None:
    params = load_params(REPO / DEFAULT_PARAMS)
    assert isinstance(params, Params)
    check_params(compose(["profile=gpu"]))


def set_key(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return data


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "prepare.max_papers_per_subject",
            0,
            "prepare.max_papers_per_subject = 0: must be an integer >= 1 or null",
        ),
        ("prepare.min_papers_per_subject", 0, "prepare.min_papers_per_subject = 0: must be an integer >= 1"),
        ("prepare.min_abstract_chars", -1, "prepare.min_abstract_chars = -1: must be an integer >= 0"),
        ("prepare.source.kind", "ftp", "prepare.source.kind = 'ftp': must be one of 'file', 'oai', 'hf'"),
        ("prepare.source.uri", "", "prepare.source.uri = '': give a snapshot path or URL"),
        ("prepare.source.oai.delay", -1, "prepare.source.oai.delay = -1: must be a number >= 0"),
        ("split.test_fraction", 0, "split.test_fraction = 0: must be a number > 0 and < 1"),
        ("split.val_fraction", 1.0, "split.val_fraction = 1.0: must be a number >= 0 and < 1"),
        ("split.val_fraction", 0.95, "split.val_fraction + split.test_fraction = 1.05: must be < 1"),
        ("meta.seed", -1, "meta.seed = -1: must be an integer >= 0 and <= 4294967295"),
        ("meta.seed", 1.5, "meta.seed = 1.5: must be an integer"),
        ("meta.max_seq_length", 0, "meta.max_seq_length = 0: must be an integer >= 8 and <= 8192"),
        ("meta.text_mode", "body", "meta.text_mode = 'body': must be one of 'title_abstract', 'abstract'"),
        ("meta.base_model", " ", "meta.base_model = '': must name a model"),
        ("pairs.n_pairs", 0, "pairs.n_pairs = 0: must be an integer >= 1"),
        ("pairs.n_contrastive", -3, "pairs.n_contrastive = -3: must be an integer >= 0"),
        (
            "pairs.contrastive_positive_fraction",
            1,
            "pairs.contrastive_positive_fraction = 1: must be a number > 0",
        ),
        (
            "pairs.sampling",
            "uniform",
            "pairs.sampling = 'uniform': must be one of 'proportional', 'balanced'",
        ),
        ("tfidf_baseline.ngram_max", 0, "tfidf_baseline.ngram_max = 0: must be an integer >= 1 and <= 5"),
        ("train.loss", "infonce", "train.loss = 'infonce': must be one of 'subject_mnrl', 'supcon', 'mnrl'"),
        ("train.batch_size", 0, "train.batch_size = 0: must be an integer >= 1"),
        ("train.batch_size", True, "train.batch_size = true: must be an integer >= 1"),
        ("train.batch_size", "32", "train.batch_size = '32': must be an integer >= 1"),
        ("train.learning_rate", 0, "train.learning_rate = 0: must be a number > 0 and <= 1"),
        ("train.epochs", 0, "train.epochs = 0: must be a number > 0"),
        ("train.max_steps", -2, "train.max_steps = -2: must be an integer >= -1"),
        ("train.warmup_ratio", 1, "train.warmup_ratio = 1: must be a number >= 0 and < 1"),
        ("train.contrastive_margin", 0, "train.contrastive_margin = 0: must be a number > 0 and <= 2"),
        ("train.precision", "int8", "train.precision = 'int8': must be one of 'fp32', 'fp16', 'bf16'"),
        ("ir_eval.n_queries", 0, "ir_eval.n_queries = 0: must be an integer >= 1"),
        ("logreg.C", -1.0, "logreg.C = -1.0: must be a number > 0"),
        ("logreg.max_train_papers", -5, "logreg.max_train_papers = -5: must be an integer >= 1 or null"),
        (
            "onnx_export.min_cosine_fp32",
            1.5,
            "onnx_export.min_cosine_fp32 = 1.5: must be a number >= -1 and <= 1",
        ),
        (
            "faiss_build.index",
            "lsh",
            "faiss_build.index = 'lsh': must be one of 'flat', 'ivf', 'ivf_sq8', 'ivf_pq', 'ivf_pq_sq8', 'hnsw', 'hnsw_sq8'",
        ),
        ("faiss_build.pq_bits", 17, "faiss_build.pq_bits = 17: must be an integer >= 1 and <= 16"),
        ("faiss_build.threads", 0, "faiss_build.threads = 0: must be an integer >= 1 or null"),
    ],
)
def test_a_bad_value_fails_with_one_line_naming_key_value_and_range(
    key: str, value: Any, message: str
) -> None:
    found = problems(set_key(committed(), key, value))
    assert f"params: {message}" in found
    assert len(found.splitlines()) == 1, found


def test_in_batch_losses_need_two_pairs_a_batch() -> None:
    data = set_key(set_key(committed(), "train.loss", "subject_mnrl"), "train.batch_size", 1)
    assert "params: train.batch_size = 1: must be >= 2 for train.loss = 'subject_mnrl'" in problems(data)
    check_params(set_key(set_key(committed(), "train.loss", "none"), "train.batch_size", 1))  # no error


def test_every_problem_is_reported_at_once() -> None:
    data = set_key(committed(), "train.loss", "infonce")
    data = set_key(data, "meta.seed", -1)
    data["pair"] = {"n_pairs": 3}
    data["train"]["wandb"] = {"mode": "offline"}
    del data["split"]["test_fraction"]
    lines = problems(data).splitlines()
    assert len(lines) == 5, lines
    assert any("unknown key 'train.wandb'" in line for line in lines)
    assert any("missing key 'split.test_fraction'" in line for line in lines)


def test_contrastive_pairs_can_be_switched_off_but_then_not_trained_on() -> None:
    off = set_key(committed(), "pairs.n_contrastive", 0)
    assert check_params(off).pairs.n_contrastive == 0
    for loss in ("contrastive", "online_contrastive"):
        message = problems(set_key(off, "train.loss", loss))
        assert f"train.loss = '{loss}' trains on contrastive pairs, but pairs.n_contrastive = 0" in message


@pytest.mark.parametrize("kind", ["ivf", "ivf_sq8", "ivf_pq"])
def test_ivf_nprobe_above_nlist_fails(kind: str) -> None:
    data = set_key(committed(), "faiss_build.index", kind)
    message = problems(set_key(data, "faiss_build.ivf_nprobe", 4096))
    assert "faiss_build.ivf_nprobe = 4096: must be <= faiss_build.ivf_nlist (1024)" in message


def test_sections_are_frozen_and_typed() -> None:
    params = load_params(REPO / DEFAULT_PARAMS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.train.batch_size = 3  # type: ignore[misc]
    assert load_section(SourceParams, "source", committed()["prepare"]).kind == "file"


def test_read_params_rejects_a_non_mapping(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("- a\n- b\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        read_params(tmp_path / "params.yaml")


# --- what each stage may read -----------------------------------------------------------------------------


def test_every_stage_lists_its_params_and_nothing_of_profiles() -> None:
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(pipeline) == STAGES
    for stage in STAGES:
        keys = listed_params(stage, REPO / "dvc.yaml")
        assert keys, stage
        assert not any(k.startswith(("profiles", "meta.profile", "train.wandb")) for k in keys), (stage, keys)
    assert listed_params("check_params", REPO / "dvc.yaml") == ("",)  # the whole file


def test_a_stage_cannot_read_a_key_dvc_yaml_does_not_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed()))
    monkeypatch.chdir(tmp_path)  # no dvc.yaml here: the repository's is used
    p = stage_params("tfidf_baseline")
    assert p.ir_eval.n_queries == committed()["ir_eval"]["n_queries"]
    assert committed()["logreg"]["C"] == p.logreg.C
    assert p.paths.split_dir == "data/split"
    with pytest.raises(
        ParamsError, match=r"stage 'tfidf_baseline' reads 'logreg\.batch_size', which dvc\.yaml"
    ):
        _ = p.logreg.batch_size
    with pytest.raises(ParamsError, match=r"reads 'train\.loss'"):
        _ = p.train.loss
    prepare = stage_params("prepare")
    assert prepare.prepare.source.uri.endswith("arxiv-sample.jsonl.gz")  # a whole listed section, nested
    with pytest.raises(ParamsError, match=r"reads 'meta\.text_mode'"):
        _ = prepare.meta.text_mode


def test_a_stage_fails_on_a_bad_value_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a section the stage does not read: the first stage that starts fails."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(set_key(committed(), "faiss_build.index", "lsh")))
    monkeypatch.chdir(tmp_path)
    from stages import split

    with pytest.raises(SystemExit, match=r"^split: params: faiss_build.index = 'lsh'"):
        split.main()


def test_check_params_stage_fails_on_a_section_no_stage_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stages import check_params

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed()))
    check_params.main()
    assert "params.yaml is valid" in capsys.readouterr().out
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**committed(), "pair": {}}))
    with pytest.raises(SystemExit, match="check_params: params: unknown section 'pair'"):
        check_params.main()
