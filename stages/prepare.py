"""Prepare: raw arXiv metadata (snapshot JSON Lines, plain or gzip) -> one clean table of papers.

Reads   ``prepare.source``: a snapshot path or URL, an arXiv OAI-PMH harvest (kept in ``${paths.raw_dir}``)
        or a Hugging Face dataset, as JSON lines of the arXiv snapshot schema (docs/data-sources.md).
Params  ``prepare`` section, ``meta.seed``.
Writes  ``${paths.prepared}`` (parquet: id, title, abstract, subject, subjects, update_date) and
        ``metrics/prepare.json`` (rows read, kept, dropped by reason, subjects).

Malformed lines are counted, not fatal; an unreadable input, or one without a single valid paper, stops the
stage with a one-line reason and a non-zero exit.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from arxiv_embed.io import write_json, write_parquet
from arxiv_embed.oai import OaiError
from arxiv_embed.params import load_common, load_section
from arxiv_embed.sources import SourceParams, iter_source_lines
from arxiv_embed.storage import stage_storage
from arxiv_embed.subjects import parse_categories
from arxiv_embed.text import clean_whitespace

COLUMNS = ["id", "title", "abstract", "subject", "subjects", "update_date"]
_VERSION = re.compile(r"v\d+$")
_WITHDRAWN = re.compile(
    r"^(this (paper|article|manuscript|submission|preprint|work)\b.{0,40}\b(has been|is|was) withdrawn"
    r"|(paper |article )?withdrawn\b)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PrepareParams:
    source: SourceParams
    min_abstract_chars: int
    min_papers_per_subject: int
    max_papers_per_subject: int | None


class PrepareError(RuntimeError):
    """The input cannot give a single paper."""


def strip_version(arxiv_id: str) -> str:
    """``2401.01234v3`` -> ``2401.01234``; ``hep-th/9901001v1`` -> ``hep-th/9901001``."""
    return _VERSION.sub("", arxiv_id.strip())


def is_withdrawn(abstract: str) -> bool:
    return bool(_WITHDRAWN.match(abstract.strip()))


def parse_record(line: bytes | str, min_abstract_chars: int) -> tuple[dict | None, str | None]:
    """One raw line -> (paper, None) or (None, reason it was dropped)."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None, "malformed_json"
    if not isinstance(record, dict):
        return None, "malformed_json"
    raw_id, raw_title, raw_abstract, categories = (
        record.get(k) for k in ("id", "title", "abstract", "categories")
    )
    if not (
        isinstance(raw_id, str)
        and raw_id.strip()
        and isinstance(raw_title, str)
        and isinstance(raw_abstract, str)
        and isinstance(categories, str)
    ):
        return None, "missing_field"
    abstract = clean_whitespace(raw_abstract)
    title = clean_whitespace(raw_title)
    if not abstract:
        return None, "empty_abstract"
    if is_withdrawn(abstract) or is_withdrawn(title):
        return None, "withdrawn"
    if len(abstract) < min_abstract_chars:
        return None, "short_abstract"
    subjects = parse_categories(categories)
    if not subjects:
        return None, "unknown_category"
    update_date = record.get("update_date")
    paper = {
        "id": strip_version(raw_id),
        "title": title,
        "abstract": abstract,
        "subject": subjects[0],
        "subjects": subjects,
        "update_date": update_date if isinstance(update_date, str) else "",
    }
    return paper, None


def prepare(lines: Iterable[bytes | str], params: PrepareParams, seed: int) -> tuple[pd.DataFrame, dict]:
    """Parse, clean, deduplicate and filter the raw lines; returns the papers and the report."""
    dropped: Counter[str] = Counter()
    papers: dict[str, dict] = {}
    read = 0
    for line in lines:
        if not line.strip():
            continue
        read += 1
        paper, reason = parse_record(line, params.min_abstract_chars)
        if paper is None:
            dropped[reason or "unknown"] += 1
        elif paper["id"] in papers:
            dropped["duplicate_id"] += 1
        else:
            papers[paper["id"]] = paper
    if not papers:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(dropped.items())) or "no lines"
        raise PrepareError(f"no valid arXiv paper among {read} lines ({reasons})")
    df = pd.DataFrame(list(papers.values()), columns=COLUMNS).sort_values("id", kind="stable")
    counts = df["subject"].value_counts()
    rare = counts[counts < params.min_papers_per_subject].index
    dropped["rare_subject"] = int(df["subject"].isin(rare).sum())
    df = df[~df["subject"].isin(rare)]
    if params.max_papers_per_subject is not None:
        shuffled = df.sample(frac=1, random_state=seed)
        capped = shuffled[shuffled.groupby("subject").cumcount() < params.max_papers_per_subject]
        dropped["subject_cap"] = len(df) - len(capped)
        df = capped.sort_values("id", kind="stable")
    if df.empty:
        raise PrepareError(f"all {len(papers)} valid papers are in subjects below min_papers_per_subject")
    df = df.reset_index(drop=True)
    report = {"rows_read": read, "rows_kept": len(df), "subjects": int(df["subject"].nunique())}
    report.update({f"dropped_{reason}": n for reason, n in sorted(dropped.items())})
    return df, report


@stage_storage("prepare")
def main() -> None:
    params = load_section(PrepareParams, "prepare")
    paths, meta = load_common()
    try:
        raw = iter_source_lines(params.source, paths.raw_dir)
        lines = tqdm(raw, desc="prepare: reading", unit=" lines", mininterval=2)
        df, report = prepare(lines, params, seed=meta.seed)
    except (OSError, ValueError, OaiError, PrepareError) as e:
        sys.exit(f"prepare: {e}")
    write_parquet(df, paths.prepared)
    write_json(Path(paths.metrics_dir) / "prepare.json", {f"prepare_{k}": v for k, v in report.items()})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
