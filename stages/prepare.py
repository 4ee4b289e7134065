"""Prepare: raw arXiv metadata (snapshot JSON Lines, plain or gzip) -> one clean table of papers.

Reads   ``prepare.source``: a snapshot path or URL, an arXiv OAI-PMH harvest (kept in ``${paths.raw_dir}``)
        or a Hugging Face dataset, as JSON lines of the arXiv snapshot schema (docs/data-sources.md).
Params  ``prepare`` section, ``meta.seed``.
Writes  ``${paths.prepared}`` (parquet: id, title, abstract, subject, subjects, update_date, authors, published)
        and
        ``metrics/prepare.json`` (rows read, kept, dropped by reason, subjects).

A bad line is counted, never fatal: malformed JSON, invalid UTF-8, NUL bytes (UTF-16 read as UTF-8), lone
surrogate escapes, missing fields and texts empty after cleaning are drop reasons, each reported with the first
line numbers it was seen at. Texts are cleaned before any length check (NFC, control and invisible characters
removed, whitespace collapsed) and cut at ``prepare.max_text_chars``. Of two records of one id the newest
version is kept. ``update_date`` is written as ISO 8601. The stage fails, with one line, when more than
``prepare.max_unusable_fraction`` of the lines cannot be read (naming the main reason), when no paper is left,
or when fewer than two subjects are.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from arxiv_embed.io import write_json, write_rows
from arxiv_embed.oai import OaiError
from arxiv_embed.params import PrepareParams, run_stage_check
from arxiv_embed.sources import iter_source_lines
from arxiv_embed.storage import stage_storage
from arxiv_embed.subjects import parse_categories
from arxiv_embed.text import cap_text, clean_text, has_lone_surrogate

COLUMNS = ["id", "title", "abstract", "subject", "subjects", "update_date", "authors", "published"]
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("title", pa.large_string()),  # 64-bit offsets: the texts of all of arXiv pass 2 GiB
        ("abstract", pa.large_string()),
        ("subject", pa.string()),
        ("subjects", pa.list_(pa.string())),
        ("update_date", pa.string()),
        ("authors", pa.list_(pa.string())),  # empty when the source has none (the shared sample)
        (
            "published",
            pa.string(),
        ),  # the first version's date, YYYY-MM-DD; "" when the source has no versions
    ]
)
_VERSION = re.compile(r"[vV](\d+)$")
# arXiv's own withdrawal notices: "This paper has been withdrawn by the author(s) ...", "Withdrawn.",
# "Paper withdrawn by arXiv admin ...", "Withdrawn due to ...": the word starts the text and is followed by its
# end, punctuation or by/due/because/for/at/pending, never a noun ("Withdrawn populations of cells ...").
_WITHDRAWN = re.compile(
    r"^(?:\[?(?:this|the) (?:paper|article|manuscript|submission|preprint|work|version)\b.{0,40}?\b"
    r"(?:has been|is|was|have been|are) (?:withdrawn|retracted)"
    r"|\[?(?:paper |article |submission )?withdrawn\]?(?=$|[\s.,;:!)\]-]*$|[\s.,;:)\]-]+(?:by|due|because|for|"
    r"at|pending|from|as|on|in favou?r|owing|since|after|until)\b))",
    re.IGNORECASE,
)
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?$")
_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_AUTHOR_SEPARATOR = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+")
# Reasons a line cannot be read at all: what the drop-rate guard counts.
UNUSABLE = (
    "malformed_json",
    "invalid_utf8",
    "utf16",
    "lone_surrogate",
    "missing_field",
    "empty_title",
    "empty_abstract",
    "unknown_category",
)
EXAMPLES = 3  # first line numbers (and ids) kept per drop reason


class PrepareError(RuntimeError):
    """The input cannot give a usable table of papers."""


def strip_version(arxiv_id: str) -> str:
    """``2401.01234v3`` -> ``2401.01234``; ``hep-th/9901001V1`` -> ``hep-th/9901001``."""
    return _VERSION.sub("", arxiv_id.strip())


def id_version(arxiv_id: str) -> int:
    """The version suffix of an id (``v3`` -> 3), 0 when it has none."""
    found = _VERSION.search(arxiv_id.strip())
    return int(found.group(1)) if found else 0


def is_withdrawn(text: str) -> bool:
    return bool(_WITHDRAWN.match(text.strip()))


def iso_date(value: object) -> str | None:
    """``update_date`` as ``YYYY-MM-DD`` (ISO 8601 or arXiv's occasional ``M/D/YYYY``); None if it is not a date."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    iso, us = _ISO_DATE.match(text), _US_DATE.match(text)
    parts = (
        (iso.group(1), iso.group(2), iso.group(3))
        if iso
        else (us.group(3), us.group(1), us.group(2))
        if us
        else None
    )
    if parts is None:
        return None
    try:
        return datetime.date(int(parts[0]), int(parts[1]), int(parts[2])).isoformat()
    except ValueError:
        return None


def author_names(record: dict) -> list[str]:
    """The paper's authors as "Forenames Keyname Suffix": from ``authors_parsed`` when the source has it, else
    the ``authors`` string split at commas and "and"; names that cannot be encoded are left out."""
    parsed = record.get("authors_parsed")
    if isinstance(parsed, list) and parsed:
        names = [
            " ".join(str(part) for part in (entry[1:2] + entry[:1] + entry[2:3]) if part)
            for entry in parsed
            if isinstance(entry, list)
        ]
    elif isinstance(record.get("authors"), str):
        names = _AUTHOR_SEPARATOR.split(record["authors"])
    else:
        return []
    cleaned = (clean_text(name) for name in names if not has_lone_surrogate(name))
    return [name for name in cleaned if name]


def first_version_date(record: dict) -> str:
    """The date of the paper's first version (``versions[*].created``, RFC 2822) as ``YYYY-MM-DD``, or ""."""
    versions = record.get("versions")
    if not isinstance(versions, list):
        return ""
    dates = []
    for version in versions:
        created = version.get("created") if isinstance(version, dict) else None
        if not isinstance(created, str):
            continue
        try:
            dates.append(email.utils.parsedate_to_datetime(created).date())
        except (TypeError, ValueError, IndexError):
            continue
    return min(dates).isoformat() if dates else ""


def latest_version(record: dict, raw_id: str) -> int:
    """The paper's newest version: the snapshot's ``versions`` list when it has one, else the id's suffix."""
    versions = record.get("versions")
    if isinstance(versions, list) and versions:
        numbers = [
            id_version(str(v.get("version", ""))) if isinstance(v, dict) else id_version(str(v))
            for v in versions
        ]
        return max([*numbers, len(versions)])
    return id_version(raw_id)


def decode(line: bytes | str) -> tuple[dict | None, str | None]:
    """One raw line -> (JSON object, None) or (None, why it cannot be read)."""
    if isinstance(line, bytes):
        if b"\x00" in line:
            return None, "utf16"  # NUL bytes: UTF-16/32 text read as UTF-8, or a binary file
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            return None, "invalid_utf8"
    try:
        record = json.loads(line.removeprefix("\ufeff"))  # a BOM: the first line of a file saved "with BOM"
    except ValueError:
        return None, "malformed_json"
    return (record, None) if isinstance(record, dict) else (None, "malformed_json")


def parse_record(
    line: bytes | str, min_abstract_chars: int, max_text_chars: int | None = None
) -> tuple[dict | None, str | None]:
    """One raw line -> (paper, None) or (None, reason it was dropped).

    The paper holds three private keys besides :data:`COLUMNS`: ``_version`` (its newest version, to keep the
    newest of duplicate ids), ``_capped`` (whether a text was cut at ``max_text_chars``) and ``_bad_date``.
    """
    record, reason = decode(line)
    if record is None:
        return None, reason
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
    if any(has_lone_surrogate(t) for t in (raw_id, raw_title, raw_abstract, categories)):
        return None, "lone_surrogate"
    title, abstract = clean_text(raw_title), clean_text(raw_abstract)
    if not title:
        return None, "empty_title"
    if not abstract:
        return None, "empty_abstract"
    comments = record.get("comments")
    if (
        is_withdrawn(abstract)
        or is_withdrawn(title)
        or (isinstance(comments, str) and is_withdrawn(clean_text(comments)))
    ):
        return None, "withdrawn"
    if len(abstract) < min_abstract_chars:
        return None, "short_abstract"
    subjects = parse_categories(categories)
    if not subjects:
        return None, "unknown_category"
    capped = False
    if max_text_chars is not None:
        title, abstract = cap_text(title, max_text_chars), cap_text(abstract, max_text_chars)
        capped = len(title) < len(clean_text(raw_title)) or len(abstract) < len(clean_text(raw_abstract))
    raw_date = record.get("update_date")
    date = iso_date(raw_date)
    paper = {
        "id": strip_version(raw_id),
        "title": title,
        "abstract": abstract,
        "subject": subjects[0],
        "subjects": subjects,
        "update_date": date or "",
        "authors": author_names(record),
        "published": first_version_date(record),
        "_version": latest_version(record, raw_id),
        "_capped": capped,
        "_bad_date": date is None and raw_date not in (None, ""),
    }
    return paper, None


class _Papers:
    """The kept papers as Arrow record batches (compact UTF-8, not Python objects: the whole of arXiv fits), with
    the row of each id and its version and date, so that a newer record of a paper replaces an older one."""

    def __init__(self, chunk: int = 50_000) -> None:
        self.chunk = chunk
        self.batches: list[pa.RecordBatch] = []
        self.pending: dict[str, list] = {c: [] for c in COLUMNS}
        self.rows: dict[str, int] = {}
        self.keys: list[tuple[int, str]] = []  # (version, update_date) of each row
        self.live = bytearray()

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, paper: dict) -> bool:
        """Keep ``paper``; False when a newer (or the same) record of its id is kept already."""
        key = (paper["_version"], paper["update_date"])
        old = self.rows.get(paper["id"])
        if old is not None:
            if key < self.keys[old]:  # ties: the later line wins
                return False
            self.live[old] = 0
        self.rows[paper["id"]] = len(self.keys)
        self.keys.append(key)
        self.live.append(1)
        for column in COLUMNS:
            self.pending[column].append(paper[column])
        if len(self.pending["id"]) >= self.chunk:
            self._flush()
        return old is None

    def _flush(self) -> None:
        if self.pending["id"]:
            self.batches.append(pa.RecordBatch.from_pydict(self.pending, schema=SCHEMA))
            self.pending = {c: [] for c in COLUMNS}

    def table(self) -> tuple[pa.Table, np.ndarray]:
        """All rows (no copy of the batches) and the positions of the live ones, in id order."""
        self._flush()
        table = pa.Table.from_batches(self.batches, schema=SCHEMA)
        self.batches = []
        live = np.flatnonzero(np.frombuffer(bytes(self.live), dtype=np.uint8))
        ids = table.column("id").take(pa.array(live))
        return table, live[pc.sort_indices(ids).to_numpy()]


def guard(read: int, dropped: Counter[str], first: bytes | str | None, max_unusable: float) -> None:
    """Fail when more than ``max_unusable`` of the lines cannot be read, naming the main reason."""
    unusable = {k: dropped[k] for k in UNUSABLE if dropped[k]}
    total = sum(unusable.values())
    if not read or total / read <= max_unusable:
        return
    main = max(unusable, key=lambda k: unusable[k])
    hint = ""
    if main == "utf16" or (isinstance(first, bytes) and first[:2] in (b"\xff\xfe", b"\xfe\xff")):
        hint = "; this looks like UTF-16: convert it (iconv -f UTF-16 -t UTF-8) and rerun"
    elif main == "invalid_utf8":
        hint = "; is the file in another encoding than UTF-8?"
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(unusable.items(), key=lambda kv: -kv[1]))
    raise PrepareError(
        f"{total} of {read} lines ({total / read:.1%}) are unusable, more than prepare.max_unusable_fraction "
        f"= {max_unusable:g}; mostly {main}{hint} ({reasons})"
    )


def prepare_rows(
    lines: Iterable[bytes | str], params: PrepareParams, seed: int
) -> tuple[pa.Table, np.ndarray, dict]:
    """Parse, clean, deduplicate and filter the raw lines: the papers read, the positions of those kept (in id
    order) and the report. Write them with :func:`arxiv_embed.io.write_rows` (no second copy of the table).

    The report counts every line read, kept and dropped by reason, and names the first line numbers (1-based,
    blank lines counted) with the id where there is one of each reason under ``examples``.
    """
    dropped: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    noted: Counter[str] = Counter()
    papers = _Papers()
    read = 0
    first: bytes | str | None = None

    def note(reason: str, number: int, paper_id: str | None = None) -> None:
        dropped[reason] += 1
        if len(examples.setdefault(reason, [])) < EXAMPLES:
            examples[reason].append(f"line {number}" + (f" ({paper_id})" if paper_id else ""))

    for number, line in enumerate(lines, start=1):
        if first is None:
            first = line
        if not line.strip():
            continue
        read += 1
        paper, reason = parse_record(line, params.min_abstract_chars, params.max_text_chars)
        if paper is None:
            note(reason or "unknown", number)
            continue
        noted["capped_texts"] += paper.pop("_capped")
        noted["unparsed_update_date"] += paper.pop("_bad_date")
        if paper["id"] in papers.rows:
            note("duplicate_id", number, paper["id"])
        papers.add(paper)
    guard(read, dropped, first, params.max_unusable_fraction)
    if not len(papers):
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(dropped.items())) or "no lines"
        raise PrepareError(f"no valid arXiv paper among {read} lines ({reasons})")
    valid = len(papers)
    table, order = papers.table()
    del papers
    # Subject filters on the subject column alone (a small frame); the rows are taken once, when written.
    subjects = table.column("subject").take(pa.array(order)).to_pandas()
    counts = subjects.value_counts()
    rare = counts[counts < params.min_papers_per_subject].index
    keep = subjects[~subjects.isin(rare)]
    dropped["rare_subject"] = len(subjects) - len(keep)
    if params.max_papers_per_subject is not None:
        shuffled = keep.reset_index(drop=True).sample(frac=1, random_state=seed)
        capped = shuffled[shuffled.groupby(shuffled).cumcount() < params.max_papers_per_subject]
        dropped["subject_cap"] = len(keep) - len(capped)
        keep = keep.iloc[np.sort(capped.index.to_numpy())]
    if keep.empty:
        raise PrepareError(
            f"all {valid} valid papers are in subjects with fewer than prepare.min_papers_per_subject "
            f"= {params.min_papers_per_subject} papers ({len(rare)} subjects)"
        )
    if keep.nunique() < 2:
        raise PrepareError(
            f"only one subject is left ({keep.iloc[0]}, {len(keep)} papers): the pipeline needs at least "
            "two (relevance is the primary subject)"
        )
    rows = order[keep.index.to_numpy()]
    report: dict = {"rows_read": read, "rows_kept": len(rows), "subjects": int(keep.nunique())}
    report.update({f"dropped_{reason}": n for reason, n in sorted(dropped.items())})
    report.update({k: v for k, v in sorted(noted.items()) if v})
    report["examples"] = {reason: examples[reason] for reason in sorted(examples)}
    return table, rows, report


def prepare(lines: Iterable[bytes | str], params: PrepareParams, seed: int) -> tuple[pd.DataFrame, dict]:
    """:func:`prepare_rows` as a pandas frame of the kept papers."""
    table, rows, report = prepare_rows(lines, params, seed)
    return table.take(pa.array(rows)).to_pandas(), report


@stage_storage("prepare")
def main() -> None:
    p = run_stage_check("prepare")
    params, paths, seed = p.prepare, p.paths, p.meta.seed
    try:
        raw = iter_source_lines(params.source, paths.raw_dir)
        lines = tqdm(raw, desc="prepare: reading", unit=" lines", mininterval=2)
        table, rows, report = prepare_rows(lines, params, seed=seed)
    except (OSError, ValueError, OaiError, PrepareError) as e:
        sys.exit(f"prepare: {e}")
    write_rows(table, rows, paths.prepared)
    write_json(Path(paths.metrics_dir) / "prepare.json", {f"prepare_{k}": v for k, v in report.items()})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
