"""What the API loads at start besides the model: the FAISS index of papers and the subject classifier."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq

INDEX_FILE = "index.faiss"
# faiss_build's metadata: an uncompressed Arrow IPC file, memory-mapped, so the titles, authors and abstracts of
# millions of papers stay on disk (the page cache's) and only the rows of a response are read.
META_FILE = "meta.arrow"
LEGACY_META_FILE = "meta.parquet"  # an older faiss_build's (or a hand-made index's): read into memory
META_COLUMNS = ("id", "title", "subject")  # required; an index of an older faiss_build has only these
# Written by faiss_build since the search page; an older meta.parquet gets these values, with a log line.
OPTIONAL_COLUMNS: dict[str, pa.DataType] = {
    "subjects": pa.list_(pa.string()),  # all categories, primary first (default: [subject])
    "authors": pa.list_(pa.string()),
    "published": pa.string(),  # first version, YYYY-MM-DD ("" when unknown)
    "update_date": pa.string(),
    "abstract": pa.large_string(),
}
ABS_URL = "https://arxiv.org/abs/"
PDF_URL = "https://arxiv.org/pdf/"

log = logging.getLogger(__name__)


class ResourceError(RuntimeError):
    """A model artefact is present but unusable (wrong shape, missing column): the server must not start."""


@dataclass(frozen=True)
class PaperIndex:
    """FAISS index over paper embeddings; row ``i`` of ``meta`` describes vector ``i``.

    Beside the table, the columns that filters read as arrays (built once by :func:`filter_columns`): ``subjects``
    names the codes of ``primary`` and ``categories`` (row ``category_rows[j]`` has category ``categories[j]``),
    ``dates`` is each paper's first-version date, else its last update (NaT when it has neither), and
    ``sorted_ids[i]`` is the id of row ``id_rows[i]``; ``primary_counts`` and ``any_counts`` are the papers of each
    subject (as primary subject; among the categories or as primary subject).
    """

    index: faiss.Index
    meta: pa.Table
    subjects: list[str]
    primary: np.ndarray
    categories: np.ndarray
    category_rows: np.ndarray
    dates: np.ndarray
    sorted_ids: np.ndarray
    id_rows: np.ndarray
    primary_counts: np.ndarray
    any_counts: np.ndarray
    vectors_absent: str | None = (
        None  # why stored vectors cannot be read back (search by paper), None if they can
    )

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def fit_query(self, query: np.ndarray) -> np.ndarray:
        """One query as the index takes it: a 1 x d float32 row, a longer (Matryoshka) vector cut and renormalised."""
        if query.shape[-1] > self.index.d:
            query = query[..., : self.index.d]
            query = query / max(float(np.linalg.norm(query)), 1e-12)
        return np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)

    def rows_of(self, ids: list[str]) -> np.ndarray:
        """The row of each id, -1 for an id not in the index."""
        if not len(self.sorted_ids) or not ids:
            return np.full(len(ids), -1, dtype=np.int64)
        wanted = np.array([i.encode("utf-8", "replace") for i in ids], dtype=bytes)
        at = np.searchsorted(self.sorted_ids, wanted).clip(max=len(self.sorted_ids) - 1)
        return np.where(self.sorted_ids[at] == wanted, self.id_rows[at], -1).astype(np.int64)

    def vector(self, row: int) -> np.ndarray:
        """The stored vector of one row (a decoded approximation for compressed indexes)."""
        if self.vectors_absent is not None:
            raise ResourceError(self.vectors_absent)
        return self.index.reconstruct(int(row))

    def records(self, rows: list[int] | np.ndarray) -> list[dict[str, object]]:
        """The metadata of these rows as dicts, with the paper's arXiv page and PDF links."""
        # Row by row: a zero-copy slice of its chunk. ``Table.take`` would first join each column's chunks into
        # one array, a copy of all the abstracts of a memory-mapped full-arXiv table at every request.
        records = [self.meta.slice(int(row), 1).to_pylist()[0] for row in rows]
        for record in records:
            record["url"] = ABS_URL + record["id"]
            record["pdf_url"] = PDF_URL + record["id"]
        return records


def filter_columns(meta: pa.Table) -> dict[str, object]:
    """What :class:`PaperIndex` holds beside ``meta`` (which has every column of ``META_COLUMNS`` and
    ``OPTIONAL_COLUMNS``) for filters, ids and counts."""
    subjects_col = meta.column("subjects").combine_chunks()
    primary = meta.column("subject").combine_chunks()
    flat = pc.list_flatten(subjects_col)
    # Codes in sorted name order: a hash encoding, then its few names sorted.
    encoded = pc.dictionary_encode(pa.concat_arrays([primary, flat]))
    names = encoded.dictionary.to_pylist()
    rank = np.argsort(np.argsort(np.array(names, dtype=object), kind="stable")).astype(np.int32)
    codes = rank[encoded.indices.to_numpy()]
    primary_codes, category_codes = codes[: len(primary)], codes[len(primary) :]
    category_rows = pc.list_parent_indices(subjects_col).to_numpy().astype(np.int32)
    # Ids as bytes (arXiv ids are ASCII): a quarter of numpy's 4-byte characters, at 2.6 million papers; chunk by
    # chunk, so that only one chunk's ids are Python objects at a time.
    chunks = [
        c.cast(pa.binary()).to_numpy(zero_copy_only=False).astype(bytes) for c in meta.column("id").chunks
    ]
    ids = np.concatenate(chunks) if chunks else np.array([], dtype=bytes)
    order = np.argsort(ids, kind="stable").astype(np.int32)
    n = len(names)
    # A paper counts once per subject, its primary subject included even where its categories lack it.
    pairs = np.unique(
        np.concatenate(
            [
                category_rows.astype(np.int64) * n + category_codes,
                np.arange(len(ids), dtype=np.int64) * n + primary_codes,
            ]
        )
    )
    return {
        "subjects": sorted(names),
        "primary": primary_codes,
        "categories": category_codes,
        "category_rows": category_rows,
        "dates": _paper_dates(meta),
        "sorted_ids": ids[order],
        "id_rows": order,
        "primary_counts": np.bincount(primary_codes, minlength=n),
        "any_counts": np.bincount(pairs % n, minlength=n),
    }


def _return_freed_memory() -> None:
    """Hand the memory that building the filter columns freed back to the system (Arrow's pool and glibc's
    keep it otherwise): hundreds of MiB at full-arXiv scale, before the index is read."""
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _paper_dates(meta: pa.Table) -> np.ndarray:
    """Each paper's first-version date when it has one, else its last update; NaT when neither is a date."""

    def as_dates(column: str) -> np.ndarray:
        parsed = pc.strptime(meta.column(column), format="%Y-%m-%d", unit="s", error_is_null=True)
        return parsed.cast(pa.date32()).to_numpy().astype("datetime64[D]")  # nulls: NaT

    published, updated = as_dates("published"), as_dates("update_date")
    return np.where(np.isnat(published), updated, published)


def _vectors_absent(index: faiss.Index) -> str | None:
    """Make stored vectors readable (an IVF index needs its direct map); why they are not, or None."""
    try:
        if isinstance(index, faiss.IndexIVF):
            index.make_direct_map()
        if index.ntotal:
            index.reconstruct(0)
    except RuntimeError as e:
        reason = (
            str(e).strip().splitlines()[-1].rsplit(": ", 1)[-1]
        )  # FAISS's message, without its C++ location
        return f"{type(index).__name__} cannot give back its vectors ({reason})"
    return None


@dataclass(frozen=True)
class Classifier:
    """Multinomial logistic regression: probabilities = softmax(x @ coef.T + intercept)."""

    coef: np.ndarray
    intercept: np.ndarray
    classes: list[str]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        logits = x.astype(np.float32) @ self.coef.T + self.intercept
        logits -= logits.max(axis=-1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=-1, keepdims=True)


def load_index(index_dir: Path, dimensions: int | list[int]) -> PaperIndex:
    """Read ``meta.arrow`` (memory-mapped; or an older ``meta.parquet``) and ``index.faiss``; fail if they
    disagree with each other or with the model.

    ``dimensions``: the vector sizes the model was evaluated at; the index may hold any of them (queries are cut
    to its size). The metadata comes first: what building its filter columns frees goes back to the system
    before the index, the bulk of the memory, is read."""
    dimension = dimensions if isinstance(dimensions, int) else dimensions[0]
    allowed = [dimensions] if isinstance(dimensions, int) else list(dimensions)
    path = meta_path(index_dir)
    if path is None:
        raise ResourceError(f"{index_dir}: no {META_FILE} (or {LEGACY_META_FILE})")
    table = feather.read_table(path, memory_map=True) if path.name == META_FILE else pq.read_table(path)
    missing = [c for c in META_COLUMNS if c not in table.column_names]
    if missing:
        raise ResourceError(f"{path}: missing column(s) {missing}")
    absent = [c for c in OPTIONAL_COLUMNS if c not in table.column_names]
    if absent:
        log.info(
            "%s has no column(s) %s (an index of an older faiss_build): empty values%s",
            path,
            ", ".join(absent),
            ", subjects = [subject]" if "subjects" in absent else "",
        )
    meta = meta_table(table)
    columns = filter_columns(meta)
    _return_freed_memory()
    index = faiss.read_index(str(index_dir / INDEX_FILE))
    if index.d not in allowed:
        raise ResourceError(
            f"{index_dir}: index dimension {index.d} is not one the model was evaluated at "
            f"({', '.join(map(str, allowed))}; model dimension {dimension})"
        )
    if index.ntotal != meta.num_rows:
        raise ResourceError(f"{index_dir}: {index.ntotal} vectors but {meta.num_rows} metadata rows")
    paper_index = PaperIndex(index=index, meta=meta, vectors_absent=_vectors_absent(index), **columns)  # type: ignore[arg-type]
    if paper_index.vectors_absent is not None:
        log.warning("search by paper id is off: %s", paper_index.vectors_absent)
    return paper_index


def meta_path(index_dir: Path) -> Path | None:
    """The index's metadata file: ``meta.arrow``, else an older ``meta.parquet``; None when it has neither."""
    for name in (META_FILE, LEGACY_META_FILE):
        if (index_dir / name).is_file():
            return index_dir / name
    return None


def index_absent(index_dir: Path | None) -> str | None:
    """Why no search index is loaded from ``index_dir`` (not configured, files missing); None if it is there."""
    reason = absent_reason(index_dir, (INDEX_FILE,))
    if reason is None and index_dir is not None and meta_path(index_dir) is None:
        return f"{index_dir}: missing {META_FILE} (or {LEGACY_META_FILE})"
    return reason


def meta_table(table: pa.Table) -> pa.Table:
    """The metadata columns the API reads, in one order and type, without nulls; optional columns that ``table``
    lacks hold empty values (``subjects``: the primary subject). A column already of its type and without nulls
    is kept as it is (a memory-mapped one stays on disk)."""
    n = table.num_rows
    types = {"title": pa.large_string(), **OPTIONAL_COLUMNS}  # the others: string
    columns: dict[str, pa.ChunkedArray | pa.Array] = {}
    for name in (*META_COLUMNS, *OPTIONAL_COLUMNS):
        type_ = types.get(name, pa.string())
        if name in table.column_names:
            column = table.column(name)
            column = column if column.type == type_ else column.cast(type_)
        elif name == "subjects":
            column = pa.array([[s] for s in columns["subject"].to_pylist()], type_)
        else:
            column = pa.array([[] if pa.types.is_list(type_) else ""] * n, type_)
        if column.null_count:
            empty = pa.scalar([] if pa.types.is_list(type_) else "", type_)
            column = pc.if_else(pc.is_null(column), empty, column)
        columns[name] = column
    return pa.table(columns)


def load_classifier(classifier_dir: Path, dimension: int) -> Classifier:
    """Read ``coef.npy``, ``intercept.npy`` and ``classes.json``; fail if the shapes disagree."""
    coef = np.load(classifier_dir / "coef.npy").astype(np.float32)
    intercept = np.load(classifier_dir / "intercept.npy").astype(np.float32)
    classes = json.loads((classifier_dir / "classes.json").read_text(encoding="utf-8"))
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise ResourceError(f"{classifier_dir}/classes.json: expected a list of subject strings")
    if coef.shape != (len(classes), dimension) or intercept.shape != (len(classes),):
        raise ResourceError(
            f"{classifier_dir}: coef {coef.shape} / intercept {intercept.shape} do not fit "
            f"{len(classes)} classes x dimension {dimension}"
        )
    return Classifier(coef, intercept, classes)


def absent_reason(folder: Path | None, files: tuple[str, ...]) -> str | None:
    """Why an optional artefact is not loaded (not configured, or files missing); None if it is all there."""
    if folder is None:
        return "not configured"
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        return f"{folder}: missing {', '.join(missing)}"
    return None
