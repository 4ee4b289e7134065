"""Stage split: stratification, no leakage, identical titles together, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pipeline_helpers import run_stages

from arxiv_embed.io import SPLITS
from stages.split import SplitError, SplitParams, split, title_key

PARAMS = SplitParams(val_fraction=0.1, test_fraction=0.2)


def papers(counts: dict[str, int], seed: int = 0) -> pd.DataFrame:
    rows = [
        {"id": f"{2400 + i // 1000}.{i:05d}", "title": f"Paper {i} on {s}", "abstract": "x", "subject": s}
        for i, s in enumerate(s for s, n in counts.items() for _ in range(n))
    ]
    return pd.DataFrame(rows).sample(frac=1, random_state=seed).reset_index(drop=True)


COUNTS = {"cs.LG": 57, "math.AP": 31, "hep-th": 10, "q-bio.NC": 3}


def test_each_subject_is_split_by_the_fractions() -> None:
    splits = split(papers(COUNTS), PARAMS, seed=0)
    for subject, n in COUNTS.items():
        sizes = {name: int((df["subject"] == subject).sum()) for name, df in splits.items()}
        n_test, n_val = round(n * 0.2), round(n * 0.1)
        assert sizes == {"train": n - n_test - n_val, "val": n_val, "test": n_test}, subject


def test_no_id_in_two_splits_and_none_lost() -> None:
    df = papers(COUNTS)
    splits = split(df, PARAMS, seed=1)
    ids = [set(s["id"]) for s in splits.values()]
    assert sum(len(i) for i in ids) == len(df)
    assert set().union(*ids) == set(df["id"])
    for name, s in splits.items():
        assert s["id"].is_monotonic_increasing, name
        assert list(s.columns) == list(df.columns)


def test_identical_titles_stay_in_one_split() -> None:
    df = papers({"cs.LG": 40, "math.AP": 40})
    same = ["Deep Nets.", "deep   nets", " DEEP NETS "]
    # Three re-submissions of one paper (one filed under another subject), and a second family.
    df.loc[[0, 1, 2], "title"] = same
    df.loc[[3, 4], "title"] = "Elliptic bounds"
    for seed in range(10):
        splits = split(df, PARAMS, seed=seed)
        where = {i: name for name, s in splits.items() for i in s["id"]}
        assert len({where[i] for i in df.loc[[0, 1, 2], "id"]}) == 1, seed
        assert len({where[i] for i in df.loc[[3, 4], "id"]}) == 1, seed


def test_title_key() -> None:
    assert title_key("  Deep\nNets. ") == title_key("deep nets") == "deep nets"
    assert title_key("Deep Nets 2") != title_key("Deep Nets")


def test_same_input_and_seed_same_split_whatever_the_row_order() -> None:
    one = split(papers(COUNTS, seed=0), PARAMS, seed=5)
    two = split(papers(COUNTS, seed=1), PARAMS, seed=5)
    for name in SPLITS:
        pd.testing.assert_frame_equal(one[name], two[name])
    other = split(papers(COUNTS), PARAMS, seed=6)
    assert set(other["test"]["id"]) != set(one["test"]["id"])


@pytest.mark.parametrize(
    ("val", "test", "message"),
    [
        (0.5, 0.5, "must be < 1"),
        (0.6, 0.5, "must be < 1"),
    ],
)
def test_fractions_leaving_nothing_to_train_on_are_rejected(val: float, test: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SplitParams(val_fraction=val, test_fraction=test)


def test_no_validation_split_is_allowed() -> None:
    splits = split(papers(COUNTS), SplitParams(val_fraction=0.0, test_fraction=0.2), seed=0)
    assert splits["val"].empty and len(splits["test"]) == sum(round(n * 0.2) for n in COUNTS.values())


def test_main_smoke_and_byte_identical_reruns(tiny_project: Path) -> None:
    run_stages("prepare", "split")
    split_dir = tiny_project / "data" / "split"
    first = {name: (split_dir / f"{name}.parquet").read_bytes() for name in SPLITS}
    metrics = json.loads((tiny_project / "metrics" / "split.json").read_text())
    tables = {name: pd.read_parquet(split_dir / f"{name}.parquet") for name in SPLITS}
    assert {f"split_{n}_papers": len(t) for n, t in tables.items()}.items() <= metrics.items()
    assert sum(len(t) for t in tables.values()) == 6 * 24
    assert metrics["split_test_subjects"] == 6
    run_stages("split")
    assert {name: (split_dir / f"{name}.parquet").read_bytes() for name in SPLITS} == first


def test_a_subject_that_cannot_be_stratified_is_named() -> None:
    counts = {"cs.LG": 40, "math.AP": 30, "hep-th": 1, "q-bio.NC": 3}
    with pytest.raises(SplitError) as e:
        split(papers(counts), SplitParams(val_fraction=0.05, test_fraction=0.1), seed=0)
    message = str(e.value)
    assert "2 subject(s) cannot be stratified" in message
    assert (
        "hep-th (1 papers: 1 train, 0 test)" in message and "q-bio.NC (3 papers: 3 train, 0 test)" in message
    )
    assert "prepare.min_papers_per_subject" in message


def test_an_empty_split_is_refused() -> None:
    counts = {"cs.LG": 4, "math.AP": 4}  # 5% of 4 rounds to no validation paper at all
    with pytest.raises(SplitError, match=r"the val split would be empty \(8 papers, val_fraction=0\.05"):
        split(papers(counts), SplitParams(val_fraction=0.05, test_fraction=0.25), seed=0)


def test_one_subject_is_refused() -> None:
    with pytest.raises(SplitError, match=r"only one subject \(cs\.LG\)"):
        split(papers({"cs.LG": 50}), PARAMS, seed=0)
