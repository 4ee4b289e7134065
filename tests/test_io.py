"""arxiv_embed.io: writers are atomic (a failed or killed write leaves the previous file, never half a file)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from arxiv_embed.io import atomic_dir, atomic_write, read_parquet, write_json, write_parquet


def test_a_failed_write_leaves_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "papers.parquet"
    write_parquet(pd.DataFrame({"id": ["a"]}), target)

    def crash(tmp: Path) -> None:
        tmp.write_bytes(b"PAR1 half a file")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert read_parquet(target)["id"].tolist() == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["papers.parquet"]  # no leftover


def test_a_killed_writer_never_leaves_a_truncated_parquet(tmp_path: Path) -> None:
    """SIGKILL in the middle of writing a large table: the target is the old table or absent."""
    target = tmp_path / "papers.parquet"
    script = (
        "import sys, pandas as pd; from arxiv_embed.io import write_parquet\n"
        "df = pd.DataFrame({'abstract': ['x' * 2000 + str(i) for i in range(400_000)]})\n"
        "print('ready', flush=True)\n"
        f"write_parquet(df, {str(target)!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists() or len(read_parquet(target)) == 400_000


def test_write_json_replaces_whole(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    write_json(target, {"a": 1})
    write_json(target, {"b": 2})
    assert target.read_text() == '{\n  "b": 2\n}\n'


def test_atomic_dir_replaces_a_folder_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "models" / "onnx"
    with atomic_dir(out) as staging:
        (staging / "model.onnx").write_text("v1")
    assert (out / "model.onnx").read_text() == "v1"
    with pytest.raises(RuntimeError), atomic_dir(out) as staging:
        (staging / "model.onnx").write_text("half")
        raise RuntimeError("export failed")
    assert (out / "model.onnx").read_text() == "v1"
    with atomic_dir(out) as staging:
        (staging / "other.onnx").write_text("v2")
    assert sorted(p.name for p in out.iterdir()) == ["other.onnx"]  # replaced, not merged
    assert sorted(p.name for p in out.parent.iterdir()) == ["onnx"]


def test_read_split_sample_is_the_stratified_sample_of_the_split(tmp_path: Path) -> None:
    from arxiv_embed.io import read_split_sample
    from arxiv_embed.metrics import stratified_sample

    subjects = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    df = pd.DataFrame(
        {
            "id": [f"2401.{i:05d}" for i in range(100)],
            "subject": subjects,
            "title": [f"t{i}" for i in range(100)],
        }
    ).sample(frac=1, random_state=0)
    write_parquet(df, tmp_path / "train.parquet")
    expected = stratified_sample(read_parquet(tmp_path / "train.parquet"), 20, seed=3)
    pd.testing.assert_frame_equal(read_split_sample(tmp_path, "train", 20, seed=3), expected)
    assert len(read_split_sample(tmp_path, "train", None, seed=3)) == 100


def test_write_rows_takes_any_order_from_many_batches(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow as pa

    from arxiv_embed.io import write_rows

    batches = [
        pa.RecordBatch.from_pydict({"id": [f"{b}-{i}" for i in range(7)], "n": list(range(7))})
        for b in range(5)
    ]
    table = pa.Table.from_batches(batches)
    rows = np.random.default_rng(0).permutation(35)[:23]
    write_rows(table, rows, tmp_path / "out.parquet", chunk=4)
    got = read_parquet(tmp_path / "out.parquet")
    assert got["id"].tolist() == [table.column("id")[int(r)].as_py() for r in rows]
    write_rows(table, [], tmp_path / "empty.parquet")
    assert list(read_parquet(tmp_path / "empty.parquet").columns) == ["id", "n"]
