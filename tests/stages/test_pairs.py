"""Stage pairs: same-subject positives, subject sampling, sibling hard negatives, balanced contrastive labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pipeline_helpers import run_stages

from arxiv_embed.subjects import archive
from stages.pairs import PairsParams, _Groups, make_pairs, sample_anchors

PARAMS = PairsParams(
    n_pairs=1000,
    n_contrastive=101,
    contrastive_positive_fraction=0.5,
    sampling="proportional",
    hard_negatives=False,
)


def train_split(counts: dict[str, int]) -> pd.DataFrame:
    subjects = [s for s, n in counts.items() for _ in range(n)]
    return pd.DataFrame({"id": [f"p{i:04d}" for i in range(len(subjects))], "subject": subjects})


def subject_of(df: pd.DataFrame) -> dict[str, str]:
    return dict(zip(df["id"], df["subject"], strict=True))


def test_positives_share_the_subject_and_are_never_the_anchor() -> None:
    df = train_split({"cs.LG": 30, "math.AP": 2, "hep-th": 7, "lonely": 1})
    mnrl, _ = make_pairs(df, PARAMS, seed=0)
    subject = subject_of(df)
    assert len(mnrl) == 1000
    assert (mnrl["anchor_id"] != mnrl["positive_id"]).all()
    assert (mnrl["anchor_id"].map(subject) == mnrl["subject"]).all()
    assert (mnrl["positive_id"].map(subject) == mnrl["subject"]).all()
    assert "lonely" not in set(mnrl["subject"])  # a subject with one paper has no positive pair
    assert "negative_id" not in mnrl


def test_proportional_follows_paper_counts_balanced_follows_subjects() -> None:
    df = train_split({"a": 90, "b": 10})
    proportional, _ = make_pairs(df, PARAMS, seed=0)
    # 1000 anchors cycle through the 100 papers ten times: exactly the paper shares.
    assert proportional["subject"].value_counts().to_dict() == {"a": 900, "b": 100}
    assert proportional["anchor_id"].value_counts().eq(10).all()
    balanced, _ = make_pairs(df, PairsParams(1000, 100, 0.5, "balanced", False), seed=0)
    share_b = (balanced["subject"] == "b").mean()
    assert 0.45 < share_b < 0.55


def test_hard_negatives_come_from_a_sibling_subject() -> None:
    df = train_split({"math.AP": 20, "math.CA": 20, "cs.LG": 20, "cs.CV": 20, "hep-th": 20})
    mnrl, _ = make_pairs(df, PairsParams(600, 10, 0.5, "proportional", True), seed=0)
    subject = subject_of(df)
    negative = mnrl["negative_id"].map(subject)
    assert (negative != mnrl["subject"]).all()
    siblings = mnrl["subject"] != "hep-th"
    assert (negative[siblings].map(archive) == mnrl["subject"][siblings].map(archive)).all()
    # hep-th has no sibling here: its negatives come from any other subject.
    assert set(negative[~siblings]) == {"math.AP", "math.CA", "cs.LG", "cs.CV"}


def test_contrastive_is_half_same_half_different_and_labelled_right() -> None:
    df = train_split({"a": 12, "b": 5, "c": 3})
    _, contrastive = make_pairs(df, PARAMS, seed=0)
    subject = subject_of(df)
    same = contrastive["id1"].map(subject) == contrastive["id2"].map(subject)
    assert len(contrastive) == 101
    assert contrastive["label"].tolist() == same.astype(np.float32).tolist()
    assert int(contrastive["label"].sum()) == 50  # n // 2 positives, the rest negatives
    assert (contrastive.loc[same, "id1"] != contrastive.loc[same, "id2"]).all()
    assert contrastive["label"].dtype == np.float32
    assert not contrastive["label"].iloc[:50].eq(1).all()  # shuffled, not positives first


def test_same_seed_same_pairs() -> None:
    df = train_split({"math.AP": 20, "math.CA": 5, "cs.LG": 9})
    params = PairsParams(200, 50, 0.5, "balanced", True)
    one = make_pairs(df, params, seed=3)
    two = make_pairs(df.iloc[::-1], params, seed=3)  # input order does not matter either
    for a, b in zip(one, two, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert not one[0].equals(make_pairs(df, params, seed=4)[0])


def test_errors() -> None:
    with pytest.raises(ValueError, match="at least two subjects"):
        make_pairs(train_split({"a": 10}), PARAMS, seed=0)
    with pytest.raises(ValueError, match="no subject has two papers"):
        make_pairs(train_split({"a": 1, "b": 1}), PARAMS, seed=0)
    groups = _Groups(train_split({"a": 3, "b": 3})["subject"])
    with pytest.raises(ValueError, match="unknown sampling 'uniform'"):
        sample_anchors(groups, 5, "uniform", np.random.default_rng(0))


def test_main_smoke(tiny_project: Path) -> None:
    run_stages("prepare", "split", "pairs")
    mnrl = pd.read_parquet(tiny_project / "data" / "pairs" / "mnrl.parquet")
    contrastive = pd.read_parquet(tiny_project / "data" / "pairs" / "contrastive.parquet")
    train = pd.read_parquet(tiny_project / "data" / "split" / "train.parquet")
    assert len(mnrl) == 64 and len(contrastive) == 64
    assert set(mnrl["anchor_id"]) | set(mnrl["positive_id"]) <= set(train["id"])
    assert set(contrastive["id1"]) | set(contrastive["id2"]) <= set(train["id"])
    metrics = json.loads((tiny_project / "metrics" / "pairs.json").read_text())
    assert metrics == {
        "pairs_mnrl": 64,
        "pairs_mnrl_subjects": 6,
        "pairs_contrastive": 64,
        "pairs_contrastive_positive_fraction": 0.5,
    }
