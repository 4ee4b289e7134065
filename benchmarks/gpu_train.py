"""GPU training benchmark: the plain sentence-transformers anchor and the project's training, side by side.

Runs on one GPU in under 10 minutes (default sizes). For each configuration it fine-tunes all-MiniLM-L6-v2 from
the same split, then measures on the same test sample (the ``ir_eval`` protocol) and the same classification task:

- ``anchor``: plain MultipleNegativesRankingLoss, 200k random same-subject pairs from 32k train papers, batch 256,
  seq 256, bf16, lr 1e-4, one epoch, NO_DUPLICATES batches (the issue's reference recipe);
- ``project``: the ``pairs`` and ``train`` sections of the GPU profile (``conf/`` composed with ``profile=gpu``,
  as ``dvc exp run -S profile=gpu`` would; ``--params FILE`` reads a params file instead).

Prints pairs/s in training, abstracts/s when encoding, precision@1/10, MRR@10, MAP@100 and logistic-regression
accuracy / macro-F1 per configuration, and writes them as JSON (``--out``). Encoding abstracts/s is end to end
(texts, tokenisation, model, vectors back in numpy) through ``encode_papers``, the path ``ir_eval`` and ``logreg``
take: ``fast_encode`` on a GPU; ``st_encode_abstracts_per_second`` times plain ``model.encode`` on the same texts
and ``encode_min_cosine_vs_st`` compares the two.

    uv run python benchmarks/gpu_train.py --split-dir data/split --out gpu_train.json
    # tiny CPU check of the script itself:
    uv run python benchmarks/gpu_train.py --split-dir data/split --tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arxiv_embed.encode import encode_papers
from arxiv_embed.io import read_split
from arxiv_embed.metrics import (
    classification_metrics,
    cosine_scores,
    ir_metrics,
    ir_sample,
    stratified_sample,
)
from arxiv_embed.models import load_model
from arxiv_embed.params import (
    IREvalParams,
    LogregParams,
    Meta,
    PairsParams,
    TrainParams,
    compose,
    load_section,
    read_params,
)
from arxiv_embed.pooling import rowwise_cosine
from arxiv_embed.text import papers_texts
from stages.logreg import fit_classifier
from stages.pairs import make_pairs
from stages.train import fine_tune

ANCHOR_PAPERS = 32_000
ANCHOR = {
    "loss": "mnrl",
    "max_pairs": None,
    "batch_size": 256,
    "learning_rate": 1e-4,
    "epochs": 1,
    "max_steps": -1,
    "precision": "bf16",
    "batch_sampler": "no_duplicates",
}


def evaluate(model, sample, test_clf, train_clf, meta: Meta, ir: IREvalParams, clf: LogregParams) -> dict:
    import torch

    mode = meta.text_mode
    model.max_seq_length = meta.max_seq_length
    if torch.cuda.is_available():
        model.half()
    texts = pd.concat([sample.queries, sample.corpus])
    encode_papers(model, texts.head(4 * ir.batch_size), mode, ir.batch_size)  # warm-up
    start = time.perf_counter()
    emb = encode_papers(model, texts, mode, ir.batch_size)
    rate = len(texts) / (time.perf_counter() - start)
    start = time.perf_counter()
    reference = model.encode(papers_texts(texts, mode), batch_size=ir.batch_size, normalize_embeddings=True)
    st_rate = len(texts) / (time.perf_counter() - start)
    n_q = len(sample.queries)
    out = {
        "encode_abstracts_per_second": rate,
        "st_encode_abstracts_per_second": st_rate,
        "encode_min_cosine_vs_st": float(rowwise_cosine(emb, np.asarray(reference)).min()),
    }
    out.update(
        ir_metrics(cosine_scores(emb[:n_q], emb[n_q:]), sample.queries["subject"], sample.corpus["subject"])
    )
    x_train = encode_papers(model, train_clf, mode, ir.batch_size)
    x_test = encode_papers(model, test_clf, mode, ir.batch_size)
    classifier = fit_classifier(x_train, train_clf["subject"], clf, meta.seed)
    out.update(classification_metrics(list(test_clf["subject"]), list(classifier.predict(x_test))))
    model.float()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split-dir", default="data/split")
    parser.add_argument("--params", help="a params file (default: conf/ composed with --profile)")
    parser.add_argument("--profile", default="gpu", help="profile to compose when --params is not given")
    parser.add_argument("--base-model", help="folder or hub id (default: meta.base_model)")
    parser.add_argument("--configs", default="anchor,project")
    parser.add_argument("--logreg-train", type=int, default=20_000, help="train papers for the classifier")
    parser.add_argument("--max-pairs", type=int, help="cap the pairs of every configuration (a quick check)")
    parser.add_argument("--save-model", help="save the project model here (fp16 safetensors)")
    parser.add_argument("--out", default="gpu_train.json")
    parser.add_argument("--tiny", action="store_true", help="a few steps on a CPU: checks the script runs")
    args = parser.parse_args()

    params = read_params(args.params) if args.params else compose([f"profile={args.profile}"])
    meta = load_section(Meta, "meta", params)
    if args.base_model:
        meta = dataclasses.replace(meta, base_model=args.base_model)
    ir, clf = load_section(IREvalParams, "ir_eval", params), load_section(LogregParams, "logreg", params)
    pairs_params, train_params = (
        load_section(PairsParams, "pairs", params),
        load_section(TrainParams, "train", params),
    )
    anchor_papers, logreg_train = ANCHOR_PAPERS, args.logreg_train
    anchor_train = dict(ANCHOR)
    if args.tiny:
        tiny = {"max_pairs": 64, "batch_size": 16, "precision": "fp32", "eval_steps": 0}
        tiny |= {"eval_queries": 20, "eval_corpus": 80, "dataloader_workers": 0}
        train_params = dataclasses.replace(train_params, **tiny)
        anchor_train |= tiny
        ir, meta = (
            dataclasses.replace(ir, n_queries=40, n_corpus=160),
            dataclasses.replace(meta, max_seq_length=64),
        )
        anchor_papers, logreg_train = 2000, 300

    train = read_split(args.split_dir, "train")
    val, test = read_split(args.split_dir, "val"), read_split(args.split_dir, "test")
    sample = ir_sample(test, ir.n_queries, ir.n_corpus, meta.seed)
    train_clf = stratified_sample(train, logreg_train, meta.seed)
    test_clf = stratified_sample(test, 4000 if args.tiny is False else 300, meta.seed)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    results: dict[str, dict] = {
        "_setup": {"device": device, "test_sample": len(sample.queries) + len(sample.corpus)}
    }

    def save() -> None:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    results["untuned"] = evaluate(load_model(meta.base_model), sample, test_clf, train_clf, meta, ir, clf)
    save()
    for name in args.configs.split(","):
        if name == "anchor":
            papers = train.sample(n=min(anchor_papers, len(train)), random_state=meta.seed)
            pp = dataclasses.replace(
                pairs_params, n_pairs=200_000 if not args.tiny else 64, sampling="proportional"
            )
            tp = dataclasses.replace(train_params, **anchor_train)
        elif name == "project":
            papers, pp, tp = train, pairs_params, train_params
        else:
            raise SystemExit(f"unknown config {name!r}")
        if args.max_pairs:
            tp = dataclasses.replace(tp, max_pairs=args.max_pairs)
        pairs, _ = make_pairs(papers, dataclasses.replace(pp, n_contrastive=2), meta.seed)
        model, train_metrics = fine_tune(tp, meta, papers, pairs, val, ir.batch_size)
        row = {
            "pairs_per_second": train_metrics["pairs_per_second"],
            "train_seconds": train_metrics["seconds"],
        }
        row["train_pairs"] = train_metrics["pairs"]
        row.update(evaluate(model, sample, test_clf, train_clf, meta, ir, clf))
        results[name] = row
        save()
        if name == "project" and args.save_model:
            model.half().save(args.save_model)
        del model
        torch.cuda.empty_cache() if torch.cuda.is_available() else None

    cols = [
        "pairs_per_second",
        "encode_abstracts_per_second",
        "st_encode_abstracts_per_second",
        "precision@1",
        "precision@10",
        "mrr@10",
        "map@100",
    ]
    cols += ["accuracy", "macro_f1"]
    print(f"\ndevice: {device}")
    print("| config | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, row in results.items():
        if not name.startswith("_"):
            print(f"| {name} | " + " | ".join(f"{row.get(c, float('nan')):.4g}" for c in cols) + " |")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
