"""Readers and writers shared by the stages: parquet tables, flat JSON metrics, CSV plots."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

SPLITS = ("train", "val", "test")


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` without its index; the same frame always gives the same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False, engine="pyarrow", compression="zstd")


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes it first (dvc repro)")
    return pd.read_parquet(path, columns=columns, engine="pyarrow")


def read_split(split_dir: str | Path, split: str, columns: list[str] | None = None) -> pd.DataFrame:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return read_parquet(Path(split_dir) / f"{split}.parquet", columns=columns)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write a flat metrics mapping as sorted, indented JSON (numpy scalars become plain numbers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = {str(k): _plain(v) for k, v in data.items()}
    path.write_text(json.dumps(plain, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, float_format="%.6g")
