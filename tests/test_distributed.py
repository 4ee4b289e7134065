"""Main process and sharing its result, in a plain run and under torchrun (two CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_helpers import REPO

from arxiv_embed.distributed import is_main_process, on_main_process, world_size

WORKER = """
import json, os, sys
from pathlib import Path
from arxiv_embed.distributed import is_main_process, on_main_process, world_size

out, rank = Path(sys.argv[1]), os.environ["RANK"]
def once():
    (out / f"ran-{rank}").touch()
    return {"from_rank": int(rank)}
got = on_main_process(once)
(out / f"got-{rank}.json").write_text(json.dumps({"got": got, "main": is_main_process(), "world": world_size()}))
"""


def test_a_plain_run_is_a_launch_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert world_size() == 1 and is_main_process()
    assert on_main_process(lambda: 41 + 1) == 42


def test_ranks_from_the_launcher_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert world_size() == 4 and not is_main_process()


@pytest.mark.slow
def test_only_the_main_process_runs_and_all_get_its_result(tmp_path: Path) -> None:
    (tmp_path / "worker.py").write_text(WORKER)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*launch, str(tmp_path / "worker.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert sorted(p.name for p in tmp_path.glob("ran-*")) == ["ran-0"]
    results = [json.loads((tmp_path / f"got-{rank}.json").read_text()) for rank in (0, 1)]
    assert results == [
        {"got": {"from_rank": 0}, "main": True, "world": 2},
        {"got": {"from_rank": 0}, "main": False, "world": 2},
    ]
