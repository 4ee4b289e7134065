"""Split: prepared papers -> train / val / test, stratified by primary subject.

Reads   ``${paths.prepared}``.
Params  ``split`` section (fractions), ``meta.seed``.
Writes  ``${paths.split_dir}/{train,val,test}.parquet`` and ``metrics/split.json``.

Papers with the same normalised title (re-submissions under a new id) form one group that never straddles two
splits; groups are shuffled with the seed inside each subject and cut by the fractions, so the same input and seed
give byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from arxiv_embed.io import SPLITS, read_parquet, write_json, write_parquet
from arxiv_embed.params import load_common, load_section
from arxiv_embed.storage import stage_storage
from arxiv_embed.text import clean_whitespace


@dataclass(frozen=True)
class SplitParams:
    val_fraction: float
    test_fraction: float

    def __post_init__(self) -> None:
        if not (0 <= self.val_fraction < 1 and 0 < self.test_fraction < 1):
            raise ValueError("split fractions must lie in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("split: val_fraction + test_fraction must be < 1, leaving papers to train on")


def title_key(title: str) -> str:
    """Normalised title used to keep identical titles together."""
    return clean_whitespace(title).casefold().rstrip(".")


def assign_splits(papers: pd.DataFrame, params: SplitParams, seed: int) -> pd.Series:
    """The split name of each paper (index aligned with ``papers``)."""
    papers = papers.sort_values("id", kind="stable")
    groups = papers.assign(group=papers["title"].map(title_key))
    # A group belongs to the subject of its first paper (by id); its size counts towards that subject.
    group_info = groups.groupby("group", sort=True).agg(subject=("subject", "first"), size=("id", "size"))
    rng = np.random.default_rng(seed)
    group_split: dict[str, str] = {}
    for _, subject_groups in group_info.groupby("subject", sort=True):
        order = subject_groups.iloc[rng.permutation(len(subject_groups))]
        total = order["size"].sum()
        n_test = round(total * params.test_fraction)
        n_val = round(total * params.val_fraction)
        filled = order["size"].cumsum() - order["size"]  # papers before each group
        for group, before in zip(order.index, filled, strict=True):
            if before < n_test:
                group_split[group] = "test"
            elif before < n_test + n_val:
                group_split[group] = "val"
            else:
                group_split[group] = "train"
    return groups["group"].map(group_split).reindex(papers.index).rename("split")


def split(papers: pd.DataFrame, params: SplitParams, seed: int) -> dict[str, pd.DataFrame]:
    assigned = assign_splits(papers, params, seed)
    return {
        name: papers.loc[assigned[assigned == name].index]
        .sort_values("id", kind="stable")
        .reset_index(drop=True)
        for name in SPLITS
    }


def split_report(splits: dict[str, pd.DataFrame]) -> dict[str, int]:
    report = {f"split_{name}_papers": len(df) for name, df in splits.items()}
    report.update({f"split_{name}_subjects": int(df["subject"].nunique()) for name, df in splits.items()})
    return report


@stage_storage("split")
def main() -> None:
    params = load_section(SplitParams, "split")
    paths, meta = load_common()
    splits = split(read_parquet(paths.prepared), params, meta.seed)
    for name, df in splits.items():
        write_parquet(df, Path(paths.split_dir) / f"{name}.parquet")
    report = split_report(splits)
    write_json(Path(paths.metrics_dir) / "split.json", report)
    print(report)


if __name__ == "__main__":
    main()
