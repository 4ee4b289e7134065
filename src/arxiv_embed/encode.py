"""Embedding papers with a Sentence Transformer for the evaluation stages.

``fast_encode`` is the GPU path (issue 6): ``model.encode`` tokenises each batch on the thread that drives the
GPU, so the GPU waits for the tokenizer. Here texts are sorted by length, tokenised batch by batch in worker
threads (the Rust tokenizer releases the GIL) a few batches ahead of the model, padded to each batch's longest
text, and run through the underlying Hugging Face model under fp16 autocast (SDPA attention) with mean pooling
and L2 normalisation on the device.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from tqdm import tqdm

from arxiv_embed.text import TextMode, papers_texts

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

Precision = Literal["fp16", "bf16", "fp32"]


def encode_papers(
    model: Any, papers: pd.DataFrame, mode: TextMode, batch_size: int, desc: str = ""
) -> np.ndarray:
    """L2-normalised float32 embeddings of ``papers`` (title + abstract or abstract, as ``mode`` says).

    A model on a GPU goes through :func:`fast_encode`; anything else (a model on a CPU, any object with a
    Sentence Transformers style ``encode``) through ``model.encode``, which is as fast on a CPU (the model, not
    the tokenizer, is the bottleneck there) and is the reference the fast path is checked against.
    """
    if desc:
        print(f"encoding {len(papers)} papers: {desc}", flush=True)
    return encode_texts(model, papers_texts(papers, mode), batch_size)


def encode_texts(model: Any, texts: list[str], batch_size: int) -> np.ndarray:
    """L2-normalised float32 embeddings of ``texts``: :func:`fast_encode` on a GPU, ``model.encode`` elsewhere."""
    if getattr(getattr(model, "device", None), "type", None) == "cuda":
        return fast_encode(model, texts, batch_size=batch_size)
    embeddings = model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=True
    )
    return np.asarray(embeddings, dtype=np.float32)


def supports_fast_path(model: Any) -> bool:
    """Whether ``model`` is a text Transformer + mean Pooling (+ Normalize) with a fast tokenizer and no prompt."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    if not isinstance(model, SentenceTransformer) or model.default_prompt_name is not None:
        return False
    modules = list(model)
    if len(modules) == 3 and isinstance(modules[2], Normalize):
        modules = modules[:2]
    if len(modules) != 2 or not isinstance(modules[0], Transformer) or not isinstance(modules[1], Pooling):
        return False
    transformer, pooling = modules
    tokenizer: Any = transformer.tokenizer
    return (
        pooling.pooling_mode == "mean"
        and transformer.modality_config
        == {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
        and not transformer.processing_kwargs
        and not transformer.do_lower_case
        and transformer.max_seq_length is not None
        and getattr(tokenizer, "is_fast", False)
        and tokenizer.padding_side == "right"
    )


def batch_tokenizer(model: SentenceTransformer) -> Tokenizer:
    """A copy of the model's Rust tokenizer that truncates at ``model.max_seq_length`` and does not pad."""
    from tokenizers import Tokenizer

    if model.max_seq_length is None:
        raise ValueError("the model has no max_seq_length to truncate at")
    tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(model.max_seq_length)
    return tokenizer


def tokenize_batch(tokenizer: Tokenizer, texts: list[str], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask (int64, batch x longest) of ``texts``, padded on the right with ``pad_id``."""
    ids = [e.ids for e in tokenizer.encode_batch_fast(texts)]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    mask = np.arange(lengths.max(initial=0)) < lengths[:, None]
    input_ids = np.full(mask.shape, pad_id, dtype=np.int64)
    input_ids[mask] = np.fromiter(
        itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum())
    )
    return input_ids, mask.astype(np.int64)


def prefetch(fn: Any, items: Iterator[Any], workers: int, ahead: int) -> Iterator[Any]:
    """``map(fn, items)`` computed by ``workers`` threads, at most ``ahead`` results in advance, in order."""
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[Any]] = deque(pool.submit(fn, item) for item in itertools.islice(items, ahead))
        while pending:
            result = pending.popleft().result()
            pending.extend(pool.submit(fn, item) for item in itertools.islice(items, 1))
            yield result


def fast_encode(
    model: Any,
    texts: Sequence[str],
    batch_size: int = 256,
    precision: Precision = "fp16",
    workers: int = 2,
    ahead: int = 8,
    show_progress_bar: bool = False,
) -> np.ndarray:
    """L2-normalised float32 embeddings (len(texts) x dim) of ``texts``, in input order.

    For a Sentence Transformer that is a Transformer + mean Pooling (+ Normalize) with a fast tokenizer
    (:func:`supports_fast_path`); any other model falls back to ``model.encode(..., normalize_embeddings=True)``.
    Texts run longest first (by characters) in batches of ``batch_size``, truncated at ``model.max_seq_length``
    tokens and padded to each batch's longest; ``workers`` threads tokenise up to ``ahead`` batches in advance.
    On CUDA the model runs under ``precision`` autocast (fp32 on a CPU) from pinned, non-blocking copies.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = list(texts)
    if not supports_fast_path(model):
        return np.asarray(
            model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True),
            dtype=np.float32,
        )
    import torch

    device = model.device
    cuda = device.type == "cuda"
    order = np.argsort([-len(t) for t in texts], kind="stable")
    sorted_out = torch.empty((len(texts), model.get_embedding_dimension()), pin_memory=cuda)
    tokenizer, pad_id = batch_tokenizer(model), int(model.tokenizer.pad_token_id or 0)

    def tokenize(start: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        ids, mask = tokenize_batch(tokenizer, [texts[i] for i in order[start : start + batch_size]], pad_id)
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        return (start, ids_t.pin_memory(), mask_t.pin_memory()) if cuda else (start, ids_t, mask_t)

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    autocast = torch.autocast("cuda", dtype=dtype, enabled=cuda and precision != "fp32")
    hf_model = model[0].auto_model
    batches = prefetch(tokenize, iter(range(0, len(texts), batch_size)), workers, ahead)
    with torch.inference_mode(), autocast:
        for start, ids, mask in tqdm(
            batches, total=-(-len(texts) // batch_size), disable=not show_progress_bar
        ):
            ids, mask = ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)
            tokens = hf_model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            weights = mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            sorted_out[start : start + len(pooled)].copy_(pooled, non_blocking=True)
    if cuda:
        torch.cuda.synchronize(device)
    out = np.empty(tuple(sorted_out.shape), dtype=np.float32)
    out[order] = sorted_out.numpy()
    return out
