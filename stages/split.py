"""Split: prepared papers -> train / val / test, stratified by primary subject.

Reads   ``${paths.prepared}``.
Params  ``split`` section (fractions), ``meta.seed``.
Writes  ``${paths.split_dir}/{train,val,test}.parquet`` and ``metrics/split.json``.

Papers with the same normalised title (re-submissions under a new id) form one group that never straddles two
splits; groups are shuffled with the seed inside each subject and cut by the fractions, so the same input and seed
give byte-identical files.

The stage refuses, with one line naming the subjects, to write a split that is empty (val only when
``val_fraction > 0``) or a subject that would have no paper in train or in test (too few papers, or all of
them under one title), and it needs at least two subjects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from arxiv_embed.io import SPLITS, read_parquet, write_json, write_rows
from arxiv_embed.params import SplitParams, run_stage_check
from arxiv_embed.storage import stage_storage
from arxiv_embed.text import clean_whitespace


def title_key(title: str) -> str:
    """Normalised title used to keep identical titles together."""
    return clean_whitespace(title).casefold().rstrip(".")


def group_keys(titles: Iterable[str]) -> np.ndarray:
    """A 64-bit key of each normalised title (:func:`title_key`): papers with the same key share a split."""
    return np.fromiter(
        (
            int.from_bytes(
                hashlib.blake2b(title_key(t).encode("utf-8", "replace"), digest_size=8).digest(),
                "little",
                signed=True,
            )
            for t in titles
        ),
        dtype=np.int64,
    )


SPLIT_CODES = np.array(["train", "val", "test"], dtype=object)


def assign_splits(papers: pd.DataFrame, params: SplitParams, seed: int) -> pd.Series:
    """The split name of each paper (index aligned with ``papers``).

    ``papers`` needs ``id``, ``subject`` and either ``title`` or its :func:`group_keys` as ``group``.
    """
    papers = papers.sort_values("id", kind="stable")
    group = papers["group"].to_numpy() if "group" in papers else group_keys(papers["title"])
    frame = pd.DataFrame({"group": group, "subject": papers["subject"].to_numpy()})
    # A group belongs to the subject of its first paper (by id); its size counts towards that subject.
    info = frame.groupby("group", sort=True).agg(subject=("subject", "first"), size=("subject", "size"))
    sizes = info["size"].to_numpy()
    codes = np.zeros(len(info), dtype=np.int8)
    rng = np.random.default_rng(seed)
    by_subject = info.reset_index(drop=True).groupby("subject", sort=True).indices
    for subject in sorted(by_subject):
        members = by_subject[subject]
        order = members[rng.permutation(len(members))]
        total = int(sizes[order].sum())
        n_test, n_val = round(total * params.test_fraction), round(total * params.val_fraction)
        before = np.cumsum(sizes[order]) - sizes[order]  # papers before each group
        codes[order] = np.where(before < n_test, 2, np.where(before < n_test + n_val, 1, 0))
    at = np.searchsorted(info.index.to_numpy(), group)
    return pd.Series(SPLIT_CODES[codes[at]], index=papers.index, name="split")


class SplitError(ValueError):
    """The papers cannot be split as the params ask."""


def check_splits(assigned: pd.Series, subjects: pd.Series, params: SplitParams) -> None:
    """Fail on an empty split or a subject missing from train or test, naming them."""
    if subjects.nunique() < 2:
        raise SplitError(f"split: only one subject ({subjects.iloc[0]}): the pipeline needs at least two")
    counts = pd.crosstab(subjects, assigned).reindex(columns=list(SPLITS), fill_value=0)
    wanted = ["train", "test"] + (["val"] if params.val_fraction > 0 else [])
    empty = [name for name in wanted if counts[name].sum() == 0]
    if empty:
        raise SplitError(
            f"split: the {' and '.join(empty)} split would be empty ({len(subjects)} papers, "
            f"val_fraction={params.val_fraction:g}, test_fraction={params.test_fraction:g})"
        )
    short = counts[(counts["train"] == 0) | (counts["test"] == 0)]
    if not short.empty:
        names = ", ".join(
            f"{subject} ({row.sum()} papers: {row['train']} train, {row['test']} test)"
            for subject, row in list(short.iterrows())[:10]
        )
        more = f" and {len(short) - 10} more" if len(short) > 10 else ""
        raise SplitError(
            f"split: {len(short)} subject(s) cannot be stratified, no paper would be in train or in test: "
            f"{names}{more}; raise prepare.min_papers_per_subject or the fractions"
        )


def split_rows(papers: pd.DataFrame, params: SplitParams, seed: int) -> dict[str, np.ndarray]:
    """Row positions of ``papers`` in each split, in id order (``papers`` needs id, subject and title or group)."""
    papers = papers.reset_index(drop=True)
    assigned = assign_splits(papers, params, seed)
    check_splits(assigned, papers.loc[assigned.index, "subject"], params)
    order = papers["id"].sort_values(kind="stable").index
    in_order = assigned.reindex(order)
    return {name: in_order.index[in_order == name].to_numpy() for name in SPLITS}


def split(papers: pd.DataFrame, params: SplitParams, seed: int) -> dict[str, pd.DataFrame]:
    papers = papers.reset_index(drop=True)
    rows = split_rows(papers, params, seed)
    return {name: papers.iloc[rows[name]].reset_index(drop=True) for name in SPLITS}


def split_report(subjects: dict[str, pd.Series]) -> dict[str, int]:
    report = {f"split_{name}_papers": len(s) for name, s in subjects.items()}
    report.update({f"split_{name}_subjects": int(s.nunique()) for name, s in subjects.items()})
    return report


@stage_storage("split")
def main() -> None:
    """Assign on (id, title, subject) alone, then write each split as one take of the Arrow table: the texts never
    become Python objects, so memory stays near the table's own size at the scale of all of arXiv."""
    import pyarrow.parquet as pq

    p = run_stage_check("split")
    paths = p.paths
    keys = read_parquet(paths.prepared, columns=["id", "subject"])
    titles = pq.ParquetFile(paths.prepared).iter_batches(batch_size=100_000, columns=["title"])
    keys["group"] = np.concatenate(
        [group_keys(b.column(0).to_pylist()) for b in titles] or [np.empty(0, np.int64)]
    )
    try:
        rows = split_rows(keys, p.split, p.meta.seed)
    except SplitError as e:
        raise SystemExit(str(e)) from None
    table = pq.read_table(paths.prepared)
    for name, positions in rows.items():
        write_rows(table, positions, Path(paths.split_dir) / f"{name}.parquet")
    report = split_report({name: keys["subject"].iloc[positions] for name, positions in rows.items()})
    write_json(Path(paths.metrics_dir) / "split.json", report)
    print(report)


if __name__ == "__main__":
    main()
