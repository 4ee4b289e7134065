"""Readers and writers shared by the stages: parquet tables, flat JSON metrics, CSV plots.

Every writer is atomic: it writes beside the target and renames over it, so a stage killed mid-write leaves the
previous file (or none), never a truncated one; :func:`atomic_dir` does the same for a folder of outputs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

SPLITS = ("train", "val", "test")


def _staging(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` to a file beside ``path``, then rename it to ``path`` (removed on failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _staging(path, "tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A staging folder beside ``path`` to write into; when the block ends without error it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging, old = _staging(path, "tmp"), _staging(path, "old")
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if path.exists() or path.is_symlink():
            path.rename(old)
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_table(table: Any, path: str | Path) -> None:
    """Write a ``pyarrow.Table`` as parquet (zstd), atomically; without pandas objects, for large tables."""
    import pyarrow.parquet as pq

    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def write_rows(table: Any, rows: Any, path: str | Path, chunk: int = 100_000) -> None:
    """Write the ``rows`` (positions) of a ``pyarrow.Table`` as parquet, ``chunk`` rows at a time, atomically.

    Each chunk is gathered from the table's record batches one batch at a time: ``Table.take`` on a table of many
    batches first concatenates every column whole (a full copy of all the texts per call, and an overflow past
    2 GiB of strings), so writing a reordering of a large table this way costs the table plus one chunk of memory.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    positions = np.asarray(rows, dtype=np.int64)
    batches = table.to_batches()  # views, no copy
    starts = np.cumsum([0, *(b.num_rows for b in batches)])

    def gather(wanted: np.ndarray) -> Any:
        source = np.searchsorted(starts, wanted, side="right") - 1
        pieces, order = [], []
        for b in np.unique(source):
            picked = np.flatnonzero(source == b)
            pieces.append(batches[b].take(pa.array(wanted[picked] - starts[b])))
            order.append(picked)
        part = pa.Table.from_batches(pieces, schema=table.schema).combine_chunks()
        return part.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, table.schema, compression="zstd") as writer:
            if not len(positions):
                writer.write_table(table.slice(0, 0))
            for start in range(0, len(positions), chunk):
                writer.write_table(gather(positions[start : start + chunk]), row_group_size=chunk)

    atomic_write(path, write)


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` without its index; the same frame always gives the same bytes."""
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd"))


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes it first (dvc repro)")
    return pd.read_parquet(path, columns=columns, engine="pyarrow")


def read_split(split_dir: str | Path, split: str, columns: list[str] | None = None) -> pd.DataFrame:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return read_parquet(Path(split_dir) / f"{split}.parquet", columns=columns)


def read_split_sample(split_dir: str | Path, split: str, n: int | None, seed: int) -> pd.DataFrame:
    """``stratified_sample(read_split(split_dir, split), n, seed)`` without reading every paper's texts: the sample
    is drawn on the id and subject columns, then only its rows are read (a filter on the id)."""
    from arxiv_embed.metrics import stratified_sample

    if n is None:
        return read_split(split_dir, split)
    keys = stratified_sample(read_split(split_dir, split, columns=["id", "subject"]), n, seed)
    path = Path(split_dir) / f"{split}.parquet"
    rows = pd.read_parquet(path, engine="pyarrow", filters=[("id", "in", keys["id"].tolist())])
    return rows.sort_values("id", kind="stable").reset_index(drop=True)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write a flat metrics mapping as sorted, indented JSON (numpy scalars become plain numbers)."""
    plain = {str(k): _plain(v) for k, v in data.items()}
    text = json.dumps(plain, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))
