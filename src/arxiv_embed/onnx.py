"""ONNX export of a Sentence Transformers model and the ONNX Runtime encoder the API serves.

The graph holds the transformer alone (inputs -> ``token_embeddings``); mean pooling and L2 normalisation are
:mod:`arxiv_embed.pooling`, shared by the export's parity check and the API. An export folder holds
``model.onnx`` (fp32), ``model_int8.onnx`` (dynamic int8), ``tokenizer.json`` and ``config.json``, and for a
model with an adapter (:mod:`arxiv_embed.adapter`: Normalize -> Dense [-> Dense] -> Normalize after the pooling)
``adapter.npz``, the adapter's layers (``weight_0``, ``bias_0``, ...) applied to the normalised pooled vectors.

Only numpy, onnxruntime and tokenizers are imported here at module level: the serving image has no torch, so
:func:`export_onnx` imports torch and sentence_transformers itself, and :func:`quantize_int8` the quantizer.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from arxiv_embed.adapter import Layers, apply_adapter
from arxiv_embed.pooling import l2_normalize, mean_pool

MODEL_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
ADAPTER_FILE = "adapter.npz"
OUTPUT_NAME = "token_embeddings"
OPSET = 17
# ONNX Runtime's own fusions of residual add + layer norm (``SkipLayerNormalization``) and of bias + GELU
# (``BiasGelu``): on CPU the fused kernels run slower than the plain ops they replace (onnxruntime 1.32, 2
# threads: about 7% of the int8 model's time on abstracts; fp32 unchanged), so sessions skip them and
# :func:`quantize_int8` does not fuse them either. ``benchmarks/README.md`` has the measurements.
SLOW_FUSIONS = ("SkipLayerNormFusion", "BiasGeluFusion")


class TextTooLongError(ValueError):
    """A text has more tokens than the model takes and truncation was turned off."""

    def __init__(self, index: int, n_tokens: int, max_tokens: int) -> None:
        super().__init__(f"text {index} has {n_tokens} tokens, more than the model's maximum of {max_tokens}")
        self.index = index
        self.n_tokens = n_tokens
        self.max_tokens = max_tokens


def export_onnx(
    model_dir: str | Path, out_dir: str | Path, max_seq_length: int, dimensions: Sequence[int] = ()
) -> Path:
    """Export the transformer of the SentenceTransformer in ``model_dir`` to ``out_dir/model.onnx``.

    Uses the TorchScript exporter (``torch.onnx.export(dynamo=False)``) with dynamic batch and sequence axes and
    eager attention, whose graph ONNX Runtime fuses. Writes the tokenizer and ``config.json`` beside it and
    returns the path of the ONNX file. ``dimensions`` are the shorter vector sizes the model was evaluated at
    (``config.json`` lists them with the full one, and the API accepts only those).
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    from arxiv_embed.adapter import adapter_of

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = SentenceTransformer(str(model_dir), device="cpu")
    pooling = [m for m in model if isinstance(m, Pooling)]
    mode = pooling[0].get_config_dict().get("pooling_mode") if pooling else None
    if mode != "mean":
        raise ValueError(f"{model_dir}: only mean pooling is supported, the model uses {mode!r}")
    transformer: Any = model[0].auto_model
    max_positions = getattr(transformer.config, "max_position_embeddings", max_seq_length)
    if not 2 <= max_seq_length <= max_positions:
        raise ValueError(f"max_seq_length must be in 2..{max_positions}, got {max_seq_length}")
    transformer.set_attn_implementation("eager")
    transformer.eval()
    tokenizer = model.tokenizer
    inputs = [
        name
        for name in ("input_ids", "attention_mask", "token_type_ids")
        if name in tokenizer.model_input_names
    ]

    class _TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.transformer(**dict(zip(inputs, args, strict=True))).last_hidden_state

    # Two texts of different lengths, so the traced graph handles padding.
    dummy = tokenizer(["a", "two words here"], padding=True, return_tensors="pt")
    path = out / MODEL_FILE
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing notes on shapes it treats as constants; the dynamic-axes parity tests cover them.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            _TokenEmbeddings(),
            tuple(dummy[name] for name in inputs),
            str(path),
            dynamo=False,
            input_names=inputs,
            output_names=[OUTPUT_NAME],
            dynamic_axes={name: {0: "batch", 1: "sequence"} for name in [*inputs, OUTPUT_NAME]},
            opset_version=OPSET,
        )
    tokenizer.save_pretrained(str(out))
    adapter = adapter_of(model)
    from sentence_transformers.sentence_transformer.modules import Dense

    if adapter is None and any(isinstance(m, Dense) for m in model):
        raise ValueError(f"{model_dir}: a Dense module other than an arxiv_embed adapter cannot be exported")
    dimension = int(transformer.config.hidden_size)
    if adapter is not None:
        save_adapter(out / ADAPTER_FILE, adapter)
        dimension = int(adapter[-1][0].shape[0])
    else:
        (out / ADAPTER_FILE).unlink(missing_ok=True)
    config = {
        "source_model": str(model_dir),
        "dimension": dimension,
        "hidden_size": int(transformer.config.hidden_size),
        "adapter": ADAPTER_FILE if adapter is not None else None,
        "dimensions": sorted({dimension, *(int(d) for d in dimensions if 0 < d < dimension)}, reverse=True),
        "max_seq_length": max_seq_length,
        "pooling": "mean",
        "inputs": inputs,
        "output": OUTPUT_NAME,
        "pad_token_id": int(tokenizer.pad_token_id or 0),
        "num_heads": int(transformer.config.num_attention_heads),
        "opset": OPSET,
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def quantize_int8(fp32_path: str | Path, int8_path: str | Path) -> Path:
    """Dynamic int8 quantization of an exported model: int8 weights per channel, uint8 activations.

    The graph is first fused by ONNX Runtime's transformer optimizer (attention, embeddings + layer norm,
    GELU), so attention is quantized as one ``QAttention`` op; skip + layer norm and bias + GELU stay unfused
    (see :data:`SLOW_FUSIONS`). Per-tensor weights would drop the cosine to the fp32 vectors to about 0.92;
    per channel keeps it above 0.99 on abstracts.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    fp32_path = Path(fp32_path)
    config = load_config(fp32_path.parent) if (fp32_path.parent / CONFIG_FILE).is_file() else {}
    fusions = FusionOptions("bert")
    fusions.enable_skip_layer_norm = False
    fusions.enable_bias_skip_layer_norm = False
    fusions.enable_bias_gelu = False
    fused = optimize_model(
        str(fp32_path),
        model_type="bert",
        num_heads=int(config.get("num_heads", 0)),  # 0: detected from the graph
        hidden_size=int(config.get("dimension", 0)),
        opt_level=1,
        optimization_options=fusions,
    )
    with tempfile.TemporaryDirectory() as tmp:
        fused_path = Path(tmp) / "fused.onnx"
        fused.save_model_to_file(str(fused_path))
        quantize_dynamic(
            fused_path,
            Path(int8_path),
            per_channel=True,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return Path(int8_path)


def save_adapter(path: Path, layers: Layers) -> None:
    arrays = {}
    for i, (weight, bias) in enumerate(layers):
        arrays[f"weight_{i}"], arrays[f"bias_{i}"] = weight, bias
    np.savez(path, **arrays)  # type: ignore[arg-type]


def load_adapter(path: Path) -> Layers:
    """The layers :func:`save_adapter` wrote (or the ``weight``/``bias`` pair of a linear adapter's older export)."""
    with np.load(path) as found:
        if "weight" in found:
            return [(found["weight"].astype(np.float32), found["bias"].astype(np.float32))]
        count = sum(1 for key in found.files if key.startswith("weight_"))
        return [
            (found[f"weight_{i}"].astype(np.float32), found[f"bias_{i}"].astype(np.float32))
            for i in range(count)
        ]


def load_config(model_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of an export folder."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not an ONNX export folder (no {CONFIG_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))


class OnnxEncoder:
    """Texts -> embeddings with ONNX Runtime and the fast tokenizer of an export folder.

    ``threads`` sets ONNX Runtime's intra-op threads (None: its default, one per physical core); ``spin=False``
    puts them to sleep as soon as a call ends instead of busy-waiting for the next one, which leaves the cores
    to other work between calls at the cost of a slower wake-up.
    """

    def __init__(
        self,
        model_dir: str | Path,
        model_file: str = MODEL_FILE,
        threads: int | None = None,
        spin: bool = True,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.config = load_config(self.model_dir)
        self.model_file = model_file
        self.dimension: int = int(self.config["dimension"])
        # The vector sizes the model was evaluated at (full first): what a request may cut its vectors to.
        self.dimensions: list[int] = [int(d) for d in self.config.get("dimensions") or [self.dimension]]
        self.max_seq_length: int = int(self.config["max_seq_length"])
        self.source_model: str = str(self.config.get("source_model", ""))
        self._inputs: list[str] = list(self.config["inputs"])
        self._pad_id = int(self.config.get("pad_token_id", 0))
        self._adapter: Layers | None = None
        if self.config.get("adapter"):
            self._adapter = load_adapter(self.model_dir / self.config["adapter"])

        self._counter = Tokenizer.from_file(str(self.model_dir / TOKENIZER_FILE))
        self._counter.no_truncation()
        self._counter.no_padding()
        self._tokenizer = Tokenizer.from_file(str(self.model_dir / TOKENIZER_FILE))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_seq_length)

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model_path = self.model_dir / model_file
        if not model_path.is_file():
            raise FileNotFoundError(f"{model_path}: no such ONNX model")
        self._session = ort.InferenceSession(
            str(model_path),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=list(SLOW_FUSIONS),
        )

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Number of tokens of each text before truncation, special tokens included."""
        return [len(e.ids) for e in self._counter.encode_batch(list(texts))]

    def encode(
        self, texts: Sequence[str], batch_size: int = 32, normalize: bool = True, truncate: bool = True
    ) -> np.ndarray:
        """Embeddings (len(texts), dimension) float32, in the order of ``texts``.

        Texts run in batches of similar length (longest first) so little padding is computed. With
        ``truncate=False`` a text longer than ``max_seq_length`` tokens raises :class:`TextTooLongError`.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if truncate:
            encodings = self._tokenizer.encode_batch(texts)
        else:
            encodings = self._counter.encode_batch(texts)
            for i, e in enumerate(encodings):
                if len(e.ids) > self.max_seq_length:
                    raise TextTooLongError(i, len(e.ids), self.max_seq_length)
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._embed([encodings[i] for i in rows])
        return l2_normalize(out) if normalize else out

    def _embed(self, encodings: list[Encoding]) -> np.ndarray:
        length = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), length), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        types = np.zeros((len(encodings), length), dtype=np.int64)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            mask[row, :n] = 1
            types[row, :n] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        (token_embeddings,) = self._session.run([OUTPUT_NAME], {k: feed[k] for k in self._inputs})
        pooled = mean_pool(token_embeddings, mask)
        if self._adapter is None:
            return pooled
        return apply_adapter(l2_normalize(pooled), self._adapter, normalize=False)
