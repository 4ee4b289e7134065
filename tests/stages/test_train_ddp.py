"""The train stage data-parallel: two CPU processes under torchrun (gloo), one writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import REPO, run_stages

PAIRS, BATCH = 16, 4  # one epoch: 4 steps in one process, 2 steps on each of two


@pytest.mark.slow
def test_train_under_torchrun_two_processes(tiny_project: Path) -> None:
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["train"].update({"max_pairs": PAIRS, "batch_size": BATCH, "epochs": 1, "max_steps": -1})
    params["meta"]["max_seq_length"] = 32
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_stages("prepare", "split", "pairs")

    pythonpath = os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    env = {
        **os.environ,
        "PYTHONPATH": pythonpath,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",  # gloo on CPU even where a GPU is present
    }
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*launch, str(REPO / "stages" / "train.py")],
        cwd=tiny_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr and "ChildFailedError" not in done.stderr

    metrics = json.loads((tiny_project / "metrics" / "train.json").read_text())
    # Each process trained on its own half of the pairs: half the steps of one process, all pairs counted once.
    assert metrics["train_processes"] == 2
    assert metrics["train_steps"] == PAIRS // (BATCH * 2)
    assert metrics["train_pairs"] == PAIRS
    # Only the main process wrote: the summary line printed once, the model and the dvclive log saved.
    assert done.stdout.count("finetuned_val_cosine_precision@10") == 1
    assert (tiny_project / "models" / "finetuned" / "model.safetensors").is_file()
    assert (tiny_project / "metrics" / "train_log" / "metrics.json").is_file()
    from sentence_transformers import SentenceTransformer

    embeddings = SentenceTransformer(str(tiny_project / "models" / "finetuned")).encode(["galaxy halo"])
    assert embeddings.shape == (1, 384)
