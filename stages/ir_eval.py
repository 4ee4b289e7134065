"""IR eval: retrieval on the test split, untuned and fine-tuned model side by side.

Reads   ``${paths.split_dir}/test.parquet``, ``${paths.embedder_dir}`` (the model the pipeline ships: fine-tuned,
        with its adapter; ``finetuned_*`` in the metrics), ``meta.base_model`` (``untuned_*``).
Params  ``ir_eval`` (protocol: queries, corpus, batch size), ``meta``.
Writes  ``metrics/ir_eval.json`` (``untuned_precision@10``, ``finetuned_precision@10``, ..., ``finetuned_gain_precision@10``)
        and the plot ``plots/ir_eval_per_subject.csv`` (precision@10 per query subject for both models).

Protocol: ``n_queries + n_corpus`` papers drawn from the test split with ``meta.seed``; a query's relevant
documents are the corpus papers of its primary subject. With ``ir_eval.matryoshka_dims`` the same vectors cut to
their first ``d`` coordinates (renormalised, as the API's ``dimensions`` does) are measured too:
``finetuned_precision@10_dim128``, ``finetuned_map@100_dim128``, ... for both models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from arxiv_embed.encode import encode_papers
from arxiv_embed.io import read_split, write_csv, write_json
from arxiv_embed.metrics import IRSample, cosine_scores, ir_metrics, ir_per_query, ir_sample, per_subject
from arxiv_embed.models import load_model
from arxiv_embed.params import run_stage_check
from arxiv_embed.storage import stage_storage
from arxiv_embed.text import TextMode

DIM_METRICS = ("precision@10", "map@100", "mrr@10")


def evaluate(
    model: object, sample: IRSample, mode: TextMode, batch_size: int, name: str, dims: Sequence[int] = ()
) -> tuple[dict, dict[str, float]]:
    """Per-query metrics of one model on the sample, and the mean of :data:`DIM_METRICS` at each of ``dims``."""
    queries = encode_papers(model, sample.queries, mode, batch_size, f"{name} queries")
    corpus = encode_papers(model, sample.corpus, mode, batch_size, f"{name} corpus")
    subjects = (sample.queries["subject"], sample.corpus["subject"])
    at_dims: dict[str, float] = {}
    for d in dims:
        if d > queries.shape[1]:
            raise SystemExit(
                f"ir_eval: ir_eval.matryoshka_dims has {d}, more than the model's {queries.shape[1]}"
            )
        found = ir_metrics(cosine_scores(queries[:, :d], corpus[:, :d]), *subjects)
        at_dims.update({f"{k}_dim{d}": found[k] for k in DIM_METRICS})
    return ir_per_query(cosine_scores(queries, corpus), *subjects), at_dims


def summarise(per_query: dict[str, dict], sample: IRSample) -> tuple[dict[str, float], pd.DataFrame]:
    """Flat metrics for ``dvc metrics`` and the per-subject precision@10 table."""
    metrics: dict[str, float] = {"n_queries": len(sample.queries), "n_corpus": len(sample.corpus)}
    for name, values in per_query.items():
        metrics.update({f"{name}_{k}": float(v.mean()) for k, v in values.items()})
    if {"untuned", "finetuned"} <= set(per_query):
        for k in ("precision@10", "mrr@10", "ndcg@10", "map@100"):
            metrics[f"finetuned_gain_{k}"] = metrics[f"finetuned_{k}"] - metrics[f"untuned_{k}"]
    table = pd.DataFrame(
        {name: per_subject(v["precision@10"], sample.queries["subject"]) for name, v in per_query.items()}
    )
    table["queries"] = sample.queries["subject"].value_counts().reindex(table.index)
    return metrics, table.rename_axis("subject").reset_index()


@stage_storage("ir_eval")
def main() -> None:
    p = run_stage_check("ir_eval")
    params, paths, meta = p.ir_eval, p.paths, p.meta
    sample = ir_sample(read_split(paths.split_dir, "test"), params.n_queries, params.n_corpus, meta.seed)
    per_query, at_dims = {}, {}
    for name, location in (("untuned", meta.base_model), ("finetuned", paths.embedder_dir)):
        model = load_model(location, max_seq_length=meta.max_seq_length)
        per_query[name], dims = evaluate(
            model, sample, meta.text_mode, params.batch_size, name, params.matryoshka_dims
        )
        at_dims.update({f"{name}_{k}": v for k, v in dims.items()})
    metrics, table = summarise(per_query, sample)
    metrics.update(at_dims)
    write_json(Path(paths.metrics_dir) / "ir_eval.json", metrics)
    write_csv(table, Path(paths.plots_dir) / "ir_eval_per_subject.csv")
    print({k: round(v, 4) for k, v in metrics.items() if "@10" in k})


if __name__ == "__main__":
    main()
