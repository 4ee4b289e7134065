"""End to end, in temporary copies of the repository on a tiny generated snapshot.

- ``dvc repro`` of the whole DAG, then a second one runs nothing; every stage reads every key dvc.yaml lists for
  it (and, as ``arxiv_embed.params.stage_params`` enforces, no other); changing one key changes only its readers;
- ``dvc exp run -S profile=... -S key=value``: the override wins over the profile and is what runs;
- a queued two-experiment sweep (``dvc exp run --queue`` + ``dvc queue start``) and ``dvc exp run --temp`` with
  the raw snapshot at a path relative to the repository (``../shared/...``), as on a fresh clone.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import REPO, make_papers, tiny_params, tiny_profile, write_snapshot

pytestmark = pytest.mark.slow

METRICS = [
    "prepare",
    "split",
    "pairs",
    "tfidf_baseline",
    "train",
    "ir_eval",
    "logreg",
    "onnx_export",
    "faiss_build",
]


def copy_repository(dst: Path, extra: dict[Path, str] | None = None) -> Path:
    """The working tree's files that git tracks or would track (not ignored), in a fresh git repository.

    Untracked files are included so that work in progress in the shared tree is tested as it will be committed;
    ``extra`` files (path -> text) are written and committed with them.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = REPO / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    for path, text in (extra or {}).items():
        path.write_text(text)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dst, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "copy"], cwd=dst, check=True)
    return dst


PIPELINE_EXTRA = {
    "meta": {"max_seq_length": 64},
    "train": {"max_steps": 2, "batch_size": 4, "eval_steps": 1},
    "onnx_export": {"n_parity_texts": 16, "batch_size": 8, "max_precision_drop_int8": 0.2},
    "faiss_build": {"batch_size": 16, "n_recall_queries": 10, "threads": 1},
}
# Keys a stage reads only in some configurations (another loss, index type or encoder than the tiny run's).
CONDITIONAL = {
    "train": {
        "train.mini_batch_size",
        "train.contrastive_margin",
        "train.supcon_temperature",
        "train.precision",
    },
    "faiss_build": {
        "faiss_build.torch_batch_size",
        "faiss_build.ivf_nlist",
        "faiss_build.ivf_nprobe",
        "faiss_build.hnsw_m",
        "faiss_build.hnsw_ef_construction",
        "faiss_build.hnsw_ef_search",
    },
}


def pipeline_params(snapshot: Path) -> dict:
    """Tiny sizes for every stage of dvc.yaml, the ONNX and FAISS stages included."""
    params = tiny_params(snapshot)
    for section, values in PIPELINE_EXTRA.items():
        params[section].update(values)
    return params


def dvc(root: Path, *args: str, timeout: float = 1200, **extra_env: str) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",  # stage commands run `python` of this venv
        "PYTHONPATH": str(root / "src"),  # the copy's package, not the repository's
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        **extra_env,
    }
    return subprocess.run(
        [str(bin_dir / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def listed(root: Path) -> dict[str, set[str]]:
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return {
        name: {k for k in stage.get("params") or [] if isinstance(k, str)} for name, stage in stages.items()
    }


def changed_stages(root: Path) -> set[str]:
    """Stages that `dvc status` says have changed params or code (not missing outputs)."""
    status = json.loads(ok(dvc(root, "status", "--json")).stdout or "{}")
    return {
        stage
        for stage, changes in status.items()
        for change in changes
        if isinstance(change, dict) and ("changed params" in change or "modified" in json.dumps(change))
    }


@pytest.mark.timeout(1500)
def test_dvc_repro_end_to_end_then_nothing_to_do(tmp_path: Path) -> None:
    root = copy_repository(tmp_path / "repo")
    snapshot = write_snapshot(tmp_path / "arxiv.jsonl.gz", make_papers(per_subject=24))
    (root / "params.yaml").write_text(yaml.safe_dump(pipeline_params(snapshot), sort_keys=False))

    trace = tmp_path / "params-read.txt"
    first = ok(dvc(root, "repro", ARXIV_EMBED_PARAMS_TRACE=str(trace)))
    assert "Running stage 'check_params'" in first.stdout
    for stage in METRICS:
        assert f"Running stage '{stage}'" in first.stdout, stage
        metrics = json.loads((root / "metrics" / f"{stage}.json").read_text())
        assert metrics, stage
        for key, value in metrics.items():
            if key == "prepare_examples":  # reason -> "line N (id)" of the first lines dropped for it
                assert all(line.startswith("line ") for lines in value.values() for line in lines), value
                continue
            assert isinstance(value, int | float) and math.isfinite(value), (stage, key, value)
    assert (root / "dvc.lock").is_file()
    assert (root / "models" / "finetuned" / "modules.json").is_file()
    assert (root / "plots" / "ir_eval_per_subject.csv").is_file()

    second = dvc(root, "repro")
    assert second.returncode == 0, second.stderr[-4000:]
    assert "Running stage" not in second.stdout, second.stdout
    assert "up to date" in second.stdout.lower()

    status = dvc(root, "status")
    assert status.returncode == 0 and "up to date" in status.stdout.lower(), status.stdout

    # Each stage read every key dvc.yaml lists for it (a key it reads but does not list fails the stage).
    read: dict[str, set[str]] = {}
    for line in trace.read_text().splitlines():
        stage, key = line.split()
        read.setdefault(stage, set()).add(key)
    for stage, keys in listed(root).items():
        if stage == "check_params":
            continue
        unread = {
            k for k in keys if not any(r == k or r.startswith(k + ".") for r in read.get(stage, ()))
        } - CONDITIONAL.get(stage, set())
        assert not unread, f"dvc.yaml lists {sorted(unread)} for {stage}, which it never read"

    # One key changed: only the stages that read it (and the params check) are out of date.
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, key, value, readers in [
        ("faiss_build", "n_recall_queries", 8, {"faiss_build"}),
        ("tfidf_baseline", "min_df", 2, {"tfidf_baseline"}),
        ("ir_eval", "n_corpus", 25, {"ir_eval", "tfidf_baseline", "onnx_export"}),
        ("train", "logging_steps", 2, {"train"}),
    ]:
        changed = json.loads(json.dumps(params))
        changed[section][key] = value
        (root / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
        assert changed_stages(root) == readers | {"check_params"}, (section, key)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert changed_stages(root) == set()

    # An artifact of dvc.yaml, fetched from the repository by its registered version (a GTO git tag).
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    ok(dvc(root, "remote", "add", "-d", "-f", "test", str(tmp_path / "remote")))
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "run"], cwd=root, check=True)
    ok(dvc(root, "push", "onnx_export"))
    subprocess.run([*git, "tag", "-a", "arxiv-embed-onnx@v0.1.0", "-m", "tiny"], cwd=root, check=True)
    ok(dvc(tmp_path, "artifacts", "get", str(root), "arxiv-embed-onnx", "-o", str(tmp_path / "fetched")))
    assert {"model.onnx", "model_int8.onnx", "config.json", "tokenizer.json"} <= {
        p.name for p in (tmp_path / "fetched").iterdir()
    }


def sweep_repository(tmp_path: Path) -> Path:
    """A repository copy with a ``tiny`` profile reading ``../shared/arxiv.jsonl.gz``, committed, as a clone."""
    shared = tmp_path / "shared"
    shared.mkdir()
    write_snapshot(shared / "arxiv.jsonl.gz", make_papers(per_subject=24))
    root = tmp_path / "repo"
    root.mkdir()
    profile = root / "conf" / "profile" / "tiny.yaml"
    profile.parent.mkdir(parents=True)
    copy_repository(root, extra={profile: tiny_profile("../shared/arxiv.jsonl.gz", PIPELINE_EXTRA)})
    return root


@pytest.mark.timeout(900)
def test_set_param_wins_over_the_profile_and_is_what_runs(tmp_path: Path) -> None:
    root = sweep_repository(tmp_path)
    ok(dvc(root, "exp", "run", "-S", "profile=tiny", "-S", "pairs.n_pairs=48", "pairs"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["pairs"]["n_pairs"] == 48 and params["train"]["batch_size"] == 4  # -S, then the profile
    assert json.loads((root / "metrics" / "pairs.json").read_text())["pairs_mnrl"] == 48  # what ran
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["stages"]["pairs"]["params"]["params.yaml"]["pairs"]["n_pairs"] == 48  # what is recorded
    diff = json.loads(ok(dvc(root, "params", "diff", "--json")).stdout)["params.yaml"]
    assert (diff["pairs.n_pairs"]["old"], diff["pairs.n_pairs"]["new"]) == (4000, 48)
    # A key that does not exist is refused by the composition, naming it.
    bad = dvc(root, "exp", "run", "-S", "profile=tiny", "-S", "pairs.n_pair=48", "pairs")
    assert bad.returncode != 0 and "pairs.n_pair" in bad.stdout + bad.stderr


@pytest.mark.timeout(1500)
def test_queued_sweep_and_temp_run_from_a_fresh_clone(tmp_path: Path) -> None:
    root = sweep_repository(tmp_path)
    # --temp: the workspace is .dvc/tmp/exps/..., where ../shared is not; the snapshot is found anyway.
    ok(dvc(root, "exp", "run", "--temp", "-S", "profile=tiny", "prepare", timeout=600))
    ok(
        dvc(
            root,
            "exp",
            "run",
            "--queue",
            "-S",
            "profile=tiny",
            "-S",
            "train.loss=subject_mnrl,mnrl",
            "ir_eval",
        )
    )
    ok(dvc(root, "queue", "start", "--jobs", "1"))
    try:
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline:
            status = ok(dvc(root, "queue", "status")).stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(5)
        assert status.count("Success") == 2, status
    finally:
        dvc(root, "queue", "stop", "--kill")
    shown = json.loads(ok(dvc(root, "exp", "show", "--json")).stdout)
    runs = [e for entry in shown for e in (entry.get("experiments") or [])]
    losses = {}
    for run in runs:
        rev = run["revs"][0]
        params = rev["data"]["params"]["params.yaml"]["data"]
        metrics = rev["data"]["metrics"]["metrics/ir_eval.json"]["data"]
        losses[params["train"]["loss"]] = metrics["finetuned_precision@10"]
        assert params["train"]["batch_size"] == 4  # the tiny profile
    assert set(losses) >= {"subject_mnrl", "mnrl"}, losses
    assert all(0 <= v <= 1 for v in losses.values())


@pytest.mark.timeout(600)
def test_a_fresh_clone_reports_only_the_outputs_it_does_not_hold(tmp_path: Path) -> None:
    """The committed params.yaml, dvc.lock and metrics describe one run: dvc status shows no changed params or
    code on a clone, only outputs (and the deps made of them) that a clone does not have."""
    root = copy_repository(tmp_path / "repo")
    status = json.loads(ok(dvc(root, "status", "--json")).stdout or "{}")
    for stage, changes in status.items():
        for change in changes:
            assert isinstance(change, dict), (stage, change)  # not "always changed"
            for kind, entries in change.items():
                assert kind in ("changed outs", "changed deps"), (stage, kind, entries)
                # "not in cache": the lock's hash is in no cache of the clone; "deleted": no file in the workspace.
                # A dict here is a params.yaml change ({"modified": key}): the lock is not the run of params.yaml.
                states = [state if isinstance(state, str) else repr(state) for state in entries.values()]
                assert set(states) <= {"deleted", "not in cache"}, (stage, kind, entries)
