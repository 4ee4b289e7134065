"""Train: fine-tune a Sentence Transformer on same-subject pairs of arXiv papers.

Reads   ``${paths.pairs_dir}/{mnrl,contrastive}.parquet``, ``${paths.split_dir}/{train,val}.parquet``.
Params  ``train`` section, ``meta`` (base model, text mode, seed), ``ir_eval.batch_size``.
Writes  ``${paths.model_dir}`` (the fine-tuned model), ``metrics/train.json`` (validation retrieval before and
        after training, throughput) and the dvclive log ``metrics/train_log/`` (metrics.json, plots).

The recipe: model -> datasets -> loss -> evaluator (run once before training for the baseline) -> arguments ->
trainer -> save. Weights & Biases logs when the environment sets ``WANDB_MODE`` to ``offline`` or ``online``
(a logging choice, not a param: it does not change what is trained).

Data-parallel: ``torchrun --nproc_per_node N stages/train.py`` or ``accelerate launch --multi_gpu stages/train.py``
(in ``dvc.yaml`` through ``train.launcher``) trains one replica per device, each on its own share of the batches
(gloo on CPU, NCCL on CUDA). ``train.batch_size`` is per device: a step takes ``batch_size x N`` pairs, and
``train_pairs`` counts all of them. The in-batch losses see only their process's batch, so with
``subject_mnrl`` each anchor is ranked against the ``batch_size`` (not ``batch_size x N``) positives of its own
device. Every process evaluates; only the main one writes the model, ``metrics/train.json`` and the dvclive log
(and talks to the bucket, see ``arxiv_embed.storage``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from arxiv_embed.distributed import is_main_process
from arxiv_embed.io import atomic_dir, read_parquet, read_split, write_json
from arxiv_embed.losses import SubjectAwareMNRLoss, SubjectSupConLoss
from arxiv_embed.metrics import ir_sample
from arxiv_embed.models import load_model
from arxiv_embed.params import CONTRASTIVE_LOSSES, Loss, Meta, Paths, TrainParams, run_stage_check
from arxiv_embed.storage import stage_storage
from arxiv_embed.text import TextMode, papers_texts


def join_text(ids: pd.Series, texts: pd.Series) -> list[str]:
    """The texts of ``ids`` (``texts`` indexed by paper id)."""
    missing = ~ids.isin(texts.index)
    if missing.any():
        raise ValueError(
            f"train: {int(missing.sum())} pair ids are not in the train split, e.g. {ids[missing].iloc[0]}"
        )
    return texts.loc[ids].tolist()


def paper_texts(papers: pd.DataFrame, mode: TextMode) -> pd.Series:
    return pd.Series(papers_texts(papers, mode), index=papers["id"])


def training_columns(pairs: pd.DataFrame, texts: pd.Series, loss: Loss) -> dict[str, list[Any]]:
    """Columns in the order the loss reads them: (anchor, positive[, negative][, label]) or (sentence1, sentence2, label).

    For ``subject_mnrl`` the label is the subject's index in the sorted subject list.
    """
    if loss in CONTRASTIVE_LOSSES:
        return {
            "sentence1": join_text(pairs["id1"], texts),
            "sentence2": join_text(pairs["id2"], texts),
            "label": pairs["label"].astype(float).tolist(),
        }
    columns = {
        "anchor": join_text(pairs["anchor_id"], texts),
        "positive": join_text(pairs["positive_id"], texts),
    }
    if "negative_id" in pairs:
        columns["negative"] = join_text(pairs["negative_id"], texts)
    if loss in ("subject_mnrl", "supcon"):
        columns["label"] = pd.Categorical(pairs["subject"]).codes.astype(int).tolist()
    return columns


def build_loss(model: Any, params: TrainParams) -> Any:
    """The loss ``train.loss`` names, wrapped in MatryoshkaLoss when ``train.matryoshka_dims`` is set."""
    from sentence_transformers.sentence_transformer import losses

    loss = _base_loss(model, params, losses)
    if params.matryoshka_dims:
        return losses.MatryoshkaLoss(model, loss, matryoshka_dims=list(params.matryoshka_dims))
    return loss


def _base_loss(model: Any, params: TrainParams, losses: Any) -> Any:
    if params.loss == "subject_mnrl":
        return SubjectAwareMNRLoss(model)
    if params.loss == "supcon":
        return SubjectSupConLoss(model, temperature=params.supcon_temperature)
    if params.loss == "mnrl":
        return losses.MultipleNegativesRankingLoss(model)
    if params.loss == "cached_mnrl":
        return losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=params.mini_batch_size)
    if params.loss == "contrastive":
        return losses.ContrastiveLoss(model, margin=params.contrastive_margin)
    if params.loss == "online_contrastive":
        return losses.OnlineContrastiveLoss(model, margin=params.contrastive_margin)
    raise ValueError(f"train: unknown loss {params.loss!r}")


def build_evaluator(
    val: pd.DataFrame, params: TrainParams, mode: TextMode, seed: int, batch_size: int
) -> Any:
    """Retrieval on the validation split with the protocol of ``ir_eval``, at a smaller size."""
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    sample = ir_sample(val, params.eval_queries, params.eval_corpus, seed)
    corpus_by_subject = sample.corpus.groupby("subject")["id"].agg(set)
    return InformationRetrievalEvaluator(
        queries=dict(zip(sample.queries["id"], paper_texts(sample.queries, mode), strict=True)),
        corpus=dict(zip(sample.corpus["id"], paper_texts(sample.corpus, mode), strict=True)),
        relevant_docs={
            q: corpus_by_subject[s]
            for q, s in zip(sample.queries["id"], sample.queries["subject"], strict=True)
        },
        name="val",
        accuracy_at_k=[1, 5, 10],
        precision_recall_at_k=[1, 5, 10],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[100],
        batch_size=batch_size,
        show_progress_bar=False,
    )


def training_arguments(params: TrainParams, output_dir: str, seed: int, use_cuda: bool) -> Any:
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers

    report_to = ["wandb"] if wandb_enabled() else "none"
    return SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=params.epochs,
        max_steps=params.max_steps,
        per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=params.batch_size,
        learning_rate=params.learning_rate,
        warmup_ratio=params.warmup_ratio,
        weight_decay=params.weight_decay,
        use_cpu=not use_cuda,  # also what makes a CPU launch data-parallel (gloo)
        fp16=use_cuda and params.precision == "fp16",
        bf16=use_cuda and params.precision == "bf16",
        batch_sampler=BatchSamplers(params.batch_sampler),
        eval_strategy="steps" if params.eval_steps > 0 else "no",
        eval_steps=params.eval_steps if params.eval_steps > 0 else None,
        logging_steps=params.logging_steps,
        save_strategy="no",
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=params.dataloader_workers,
        report_to=report_to,
        run_name="train",
    )


def wandb_enabled() -> bool:
    """W&B logs when ``WANDB_MODE`` is ``offline`` or ``online`` (project: ``WANDB_PROJECT``, default arxiv-embed)."""
    return os.environ.get("WANDB_MODE", "disabled").strip().lower() in ("offline", "online")


def configure_wandb() -> None:
    if wandb_enabled():
        os.environ.setdefault("WANDB_PROJECT", "arxiv-embed")


def fine_tune(
    params: TrainParams,
    meta: Meta,
    train_papers: pd.DataFrame,
    pairs: pd.DataFrame,
    val_papers: pd.DataFrame,
    eval_batch_size: int,
    callbacks: list[Any] | None = None,
) -> tuple[Any, dict[str, float]]:
    """The recipe, on tables in memory: returns the fine-tuned model and its metrics."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import set_seed

    set_seed(meta.seed)
    mode: TextMode = meta.text_mode
    # 1. Model
    model = load_model(meta.base_model, max_seq_length=meta.max_seq_length)
    if params.loss == "none":  # no fine-tuning: the base model goes on as it is (e.g. to an adapter)
        before = build_evaluator(val_papers, params, mode, meta.seed, eval_batch_size)(model)
        metrics = {f"{stage}_{k}": v for stage in ("untuned", "finetuned") for k, v in before.items()}
        return model, {**metrics, "steps": 0, "pairs": 0, "seconds": 0.0, "pairs_per_second": 0.0}
    # 2. Dataset
    if params.max_pairs is not None:
        pairs = pairs.iloc[: params.max_pairs]
    train_dataset = Dataset.from_dict(training_columns(pairs, paper_texts(train_papers, mode), params.loss))
    # 3. Loss
    loss = build_loss(model, params)
    # 4. Evaluator, run once before training for the baseline
    evaluator = build_evaluator(val_papers, params, mode, meta.seed, eval_batch_size)
    before = evaluator(model)
    # 5. Arguments and 6. trainer
    configure_wandb()
    with tempfile.TemporaryDirectory(prefix="train-") as output_dir:
        trainer = SentenceTransformerTrainer(
            model=model,
            args=training_arguments(params, output_dir, meta.seed, torch.cuda.is_available()),
            train_dataset=train_dataset,
            loss=loss,
            evaluator=evaluator,
            callbacks=callbacks,
        )
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
    after = evaluator(model)
    examples = result.global_step * params.batch_size * trainer.args.world_size
    metrics = {f"untuned_{k}": v for k, v in before.items()}
    metrics.update({f"finetuned_{k}": v for k, v in after.items()})
    metrics.update(
        {
            "loss": result.training_loss,
            "steps": result.global_step,
            "processes": trainer.args.world_size,
            "pairs": examples,
            "seconds": seconds,
            "pairs_per_second": examples / seconds,
        }
    )
    return model, metrics


def train(params: TrainParams, eval_batch_size: int, paths: Paths, meta: Meta) -> dict[str, float]:
    """Read the pairs and splits, fine-tune with a dvclive log, save the model to ``paths.model_dir``.

    Under a launcher every process trains; only the main one logs and saves.
    """
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    pairs_file = "contrastive.parquet" if params.loss in CONTRASTIVE_LOSSES else "mnrl.parquet"
    live = None
    if is_main_process():
        live_dir = Path(paths.metrics_dir) / "train_log"
        shutil.rmtree(live_dir, ignore_errors=True)
        live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
    model, metrics = fine_tune(
        params,
        meta,
        train_papers=read_split(paths.split_dir, "train"),
        pairs=read_parquet(Path(paths.pairs_dir) / pairs_file),
        val_papers=read_split(paths.split_dir, "val"),
        eval_batch_size=eval_batch_size,
        callbacks=[DVCLiveCallback(live=live)] if live is not None else [],
    )
    if live is not None:
        live.end()
        # 7. Save to the declared out (written beside it, then renamed over it)
        with atomic_dir(paths.model_dir) as staging:
            model.save(str(staging))
    return metrics


@stage_storage("train")
def main() -> None:
    p = run_stage_check("train")
    metrics = train(p.train, p.ir_eval.batch_size, p.paths, p.meta)
    if not is_main_process():
        return
    write_json(Path(p.paths.metrics_dir) / "train.json", {f"train_{k}": v for k, v in metrics.items()})
    print({k: round(v, 4) for k, v in metrics.items() if "precision@10" in k or "per_second" in k})


if __name__ == "__main__":
    main()
