"""Helpers of the pipeline tests: a tiny generated arXiv snapshot and params that run in seconds on a CPU.

A module of its own (not conftest.py, which several test folders have) so test modules can import it by name.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

VOCAB = {
    "cs.LG": "neural network training gradient descent deep learning model optimisation benchmark dataset",
    "math.AP": "partial differential equation elliptic regularity Sobolev boundary value weak solution",
    "hep-th": "string theory gauge field supersymmetry holography conformal anomaly brane duality",
    "astro-ph.GA": "galaxy star formation dark matter halo redshift interstellar spiral cluster",
    "q-bio.NC": "neuron cortex synaptic plasticity spiking brain circuit cognition memory",
    "econ.GN": "market labour wage policy inflation household economic welfare trade",
}
# arXiv codes as written in snapshots, mapped by the pipeline to the subjects above.
RAW_CODES = {"econ.GN": ["econ.GN", "q-fin.EC"], "cs.LG": ["cs.LG"]}


def make_papers(per_subject: int = 24, seed: int = 0) -> list[dict]:
    """Synthetic papers in the arXiv snapshot schema, each subject with its own vocabulary."""
    rng = random.Random(seed)
    papers = []
    n = 0
    for subject, words in VOCAB.items():
        vocab = words.split()
        for _ in range(per_subject):
            n += 1
            codes = RAW_CODES.get(subject, [subject])
            title = " ".join(rng.choices(vocab, k=5)).capitalize()
            abstract = " ".join(rng.choices(vocab, k=40)).capitalize() + "."
            papers.append(
                {
                    "id": f"2401.{n:05d}v{rng.randint(1, 3)}",
                    "title": title,
                    "abstract": abstract,
                    "categories": f"{codes[n % len(codes)]} {rng.choice(list(VOCAB))}",
                    "update_date": f"2024-01-{1 + n % 28:02d}",
                }
            )
    rng.shuffle(papers)
    return papers


def write_snapshot(path: Path, records: list[dict | str]) -> Path:
    """Write records (dicts as JSON, strings as raw lines) as a gzip JSON Lines file."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for record in records:
            f.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


TINY_OVERRIDES = {
    "meta": {"max_seq_length": 48},
    "prepare": {"min_papers_per_subject": 5, "min_abstract_chars": 20},
    "split": {"val_fraction": 0.2, "test_fraction": 0.3},
    "pairs": {"n_pairs": 64, "n_contrastive": 64},
    "train": {
        "loss": "subject_mnrl",  # fine-tuning, whatever the profile
        "batch_size": 8,
        "max_steps": 4,
        "eval_queries": 10,
        "eval_corpus": 20,
        "eval_steps": 2,
        "logging_steps": 1,
        "dataloader_workers": 0,
        "precision": "fp32",
    },
    "adapter": {
        "n_papers": 60,
        "hidden": 16,  # the residual MLP adapter through the whole chain
        "encoder": "torch",
        "encode_batch_size": 16,
        "epochs": 3,
        "batch_size": 32,
        "val_queries": 10,
        "val_corpus": 20,
    },
    "tfidf_baseline": {"max_features": 500, "min_df": 1},
    "ir_eval": {"n_queries": 12, "n_corpus": 30, "batch_size": 16},
    "logreg": {"max_train_papers": 60, "max_test_papers": None, "max_iter": 200, "batch_size": 16},
}


def tiny_params(input_path: Path) -> dict:
    """The repository's params.yaml with the tiny sizes above, reading ``input_path``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY_OVERRIDES.items():
        unknown = set(values) - set(params[section])
        assert not unknown, f"TINY_OVERRIDES: {section} has no keys {unknown}"
        params[section].update(values)
    params["prepare"]["source"].update({"kind": "file", "uri": str(input_path)})
    return params


def tiny_profile(uri: str, extra: dict | None = None) -> str:
    """A ``conf/profile/<name>.yaml`` with the tiny sizes above (and ``extra`` over them), reading ``uri``."""
    profile: dict = {section: dict(values) for section, values in TINY_OVERRIDES.items()}
    for section, values in (extra or {}).items():
        profile.setdefault(section, {}).update(values)
    profile["prepare"]["source"] = {"kind": "file", "uri": uri}
    return "# @package _global_\n" + yaml.safe_dump(profile, sort_keys=False)


def run_stages(*names: str) -> None:
    """Run stage mains in order, in the current folder."""
    import importlib

    for name in names:
        importlib.import_module(f"stages.{name}").main()


def copy_project(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst
