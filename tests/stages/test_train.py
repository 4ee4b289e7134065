"""Stage train: the columns each loss reads, text joins, settings; main() once on the tiny project (slow)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pipeline_helpers import run_stages, tiny_params

from arxiv_embed.params import TrainParams, load_section
from stages.train import configure_wandb, join_text, paper_texts, training_columns, wandb_enabled

TEXTS = pd.Series({"a": "text a", "b": "text b", "c": "text c", "d": "text d"})
MNRL = pd.DataFrame(
    {"anchor_id": ["a", "c", "b"], "positive_id": ["b", "d", "a"], "subject": ["math.AP", "cs.LG", "math.AP"]}
)


def test_subject_mnrl_columns_carry_the_subject_index() -> None:
    columns = training_columns(MNRL, TEXTS, "subject_mnrl")
    assert columns == {
        "anchor": ["text a", "text c", "text b"],
        "positive": ["text b", "text d", "text a"],
        "label": [1, 0, 1],  # index in the sorted subjects: cs.LG = 0, math.AP = 1
    }
    assert list(columns) == ["anchor", "positive", "label"]  # the loss reads columns in this order


@pytest.mark.parametrize("loss", ["mnrl", "cached_mnrl"])
def test_mnrl_columns_with_and_without_hard_negatives(loss: str) -> None:
    assert training_columns(MNRL, TEXTS, loss) == {  # type: ignore[arg-type]
        "anchor": ["text a", "text c", "text b"],
        "positive": ["text b", "text d", "text a"],
    }
    with_negatives = training_columns(MNRL.assign(negative_id=["c", "a", "d"]), TEXTS, loss)  # type: ignore[arg-type]
    assert list(with_negatives) == ["anchor", "positive", "negative"]
    assert with_negatives["negative"] == ["text c", "text a", "text d"]


def test_subject_mnrl_with_hard_negatives_puts_the_label_last() -> None:
    columns = training_columns(MNRL.assign(negative_id=["c", "a", "d"]), TEXTS, "subject_mnrl")
    assert list(columns) == ["anchor", "positive", "negative", "label"]


def test_contrastive_columns() -> None:
    pairs = pd.DataFrame({"id1": ["a", "b"], "id2": ["c", "a"], "label": [0.0, 1.0]})
    assert training_columns(pairs, TEXTS, "contrastive") == {
        "sentence1": ["text a", "text b"],
        "sentence2": ["text c", "text a"],
        "label": [0.0, 1.0],
    }


def test_join_text_names_a_missing_id() -> None:
    with pytest.raises(ValueError, match=r"train: 2 pair ids are not in the train split, e.g. x"):
        join_text(pd.Series(["a", "x", "y"]), TEXTS)


def test_paper_texts_by_mode() -> None:
    papers = pd.DataFrame(
        {"id": ["1", "2"], "title": ["Title", "Why?"], "abstract": ["Abs one.", "Abs two."]}
    )
    assert paper_texts(papers, "title_abstract").to_dict() == {"1": "Title. Abs one.", "2": "Why? Abs two."}
    assert paper_texts(papers, "abstract").to_dict() == {"1": "Abs one.", "2": "Abs two."}


def test_wandb_is_set_by_the_environment_not_by_params(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WANDB_MODE", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    assert not wandb_enabled()
    configure_wandb()
    assert "WANDB_PROJECT" not in os.environ
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_enabled()
    configure_wandb()
    assert os.environ["WANDB_PROJECT"] == "arxiv-embed"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert not wandb_enabled()


def test_train_params_of_the_tiny_project(tmp_path: Path) -> None:
    params = load_section(TrainParams, "train", tiny_params(tmp_path / "x.jsonl.gz"))
    assert (params.max_steps, params.batch_size) == (4, 8)


@pytest.mark.slow
def test_main_smoke(trained_project: Path) -> None:
    model_dir = trained_project / "models" / "finetuned"
    assert (model_dir / "modules.json").is_file()
    assert (model_dir / "config_sentence_transformers.json").is_file()
    assert any(model_dir.glob("model.safetensors"))
    metrics = json.loads((trained_project / "metrics" / "train.json").read_text())
    for key in ("untuned_val_cosine_precision@10", "finetuned_val_cosine_precision@10", "loss", "steps"):
        assert f"train_{key}" in metrics, key
    assert metrics["train_steps"] == 4 and metrics["train_pairs"] == 32
    assert all(k.startswith("train_") and math.isfinite(v) for k, v in metrics.items())
    log = trained_project / "metrics" / "train_log"
    assert (log / "metrics.json").is_file()
    assert any((log / "plots" / "metrics").rglob("*.tsv"))


@pytest.mark.slow
def test_supcon_with_label_batches_and_matryoshka_trains(tiny_project: Path) -> None:
    """The multi-positive loss over subjects, grouped-by-label batches and MatryoshkaLoss around it."""
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["train"].update(
        loss="supcon", batch_sampler="group_by_label", matryoshka_dims=[384, 64], max_steps=2, eval_steps=0
    )
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_stages("prepare", "split", "pairs", "train")
    metrics = json.loads((tiny_project / "metrics" / "train.json").read_text())
    assert metrics["train_steps"] == 2 and math.isfinite(metrics["train_loss"])
    assert (tiny_project / "models" / "finetuned" / "modules.json").is_file()


@pytest.mark.slow
def test_loss_none_passes_the_base_model_on(tiny_project: Path) -> None:
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["train"]["loss"] = "none"
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_stages("prepare", "split", "pairs", "train")
    metrics = json.loads((tiny_project / "metrics" / "train.json").read_text())
    assert metrics["train_steps"] == 0
    assert (
        metrics["train_untuned_val_cosine_precision@10"] == metrics["train_finetuned_val_cosine_precision@10"]
    )
