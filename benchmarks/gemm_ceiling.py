"""How much int8 can gain on this CPU: matrix-multiply throughput on the shapes of MiniLM's layers.

The int8 model (``arxiv_embed.onnx.quantize_int8``) speeds up only its matrix multiplies, which ONNX Runtime
runs as ``DynamicQuantizeMatMul`` (uint8 activations x int8 weights, per channel); attention scores, layer norm
and GELU stay fp32. So the ratio of int8 to fp32 multiply throughput bounds the speed-up of the whole model
over fp32. On x86 it depends on the instructions: without VNNI (AVX2 only) an int8 product takes two
instructions (``vpmaddubsw`` + ``vpmaddwd``), with AVX-512 VNNI or AVX-VNNI one (``vpdpbusd``).

For each shape ``tokens x in -> out`` of a MiniLM layer (query/key/value, attention output, feed-forward up
and down) and a few token counts (a title, an abstract, a batch of 16 abstracts), it times one MatMul in
ONNX Runtime fp32, the same MatMul quantized as the pipeline quantizes, and torch fp32
(``torch.nn.functional.linear``, the kernel behind Sentence Transformers), interleaved over rounds, and
prints GMAC/s (median) and the int8 ratios, then the same over all layer shapes weighted by their
multiply-accumulates (what one encoder layer does).

    uv run python benchmarks/gemm_ceiling.py                 # 2 threads, as encode_cpu.py
    uv run python benchmarks/gemm_ceiling.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

# all-MiniLM-L6-v2: hidden 384, feed-forward 1536; query, key and value are one 384 -> 1152 product once fused.
LAYER_SHAPES = {"qkv": (384, 1152), "attn-out": (384, 384), "ffn-up": (384, 1536), "ffn-down": (1536, 384)}
TOKENS = (17, 256, 4096)  # a title (median 17 tokens), an abstract (256 after truncation), 16 abstracts
X86_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_description() -> str:
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    found = [flag for flag in X86_FLAGS if flag in flags]
    return f"{name}, {os.cpu_count()} CPUs, {'/'.join(found) or 'no AVX2'}"


def matmul_model(weight: np.ndarray, path: Path) -> Path:
    """An ONNX graph ``y = x @ weight`` with a dynamic number of rows."""
    k, n = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["tokens", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["tokens", n])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_call(call: Callable[[], object], macs: int, budget_macs: float) -> float:
    """Seconds per call, over enough calls to do about ``budget_macs`` multiply-accumulates."""
    repeats = max(3, int(budget_macs / macs))
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of torch and ONNX Runtime")
    parser.add_argument("--tokens", default=",".join(map(str, TOKENS)), help="comma-separated row counts")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds (after a warm-up)")
    parser.add_argument("--gmacs", type=float, default=2.0, help="work per timing, in 10^9 MACs")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds of idle before each timing")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    token_counts = [int(t) for t in args.tokens.split(",")]
    engines = ("onnxruntime fp32", "onnxruntime int8", "torch fp32")
    calls: dict[tuple[str, str, int], Callable[[], object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layer, (k, n) in LAYER_SHAPES.items():
            weight = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
            fp32_path = matmul_model(weight, Path(tmp) / f"{layer}.onnx")
            int8_path = Path(tmp) / f"{layer}_int8.onnx"
            quantize_dynamic(fp32_path, int8_path, per_channel=True, weight_type=QuantType.QInt8)
            fp32, int8 = session(fp32_path, args.threads), session(int8_path, args.threads)
            torch_weight = torch.from_numpy(np.ascontiguousarray(weight.T))  # Linear stores (out, in)
            for m in token_counts:
                x = rng.standard_normal((m, k)).astype(np.float32)
                tx = torch.from_numpy(x)
                calls[engines[0], layer, m] = partial(fp32.run, None, {"x": x})
                calls[engines[1], layer, m] = partial(int8.run, None, {"x": x})
                calls[engines[2], layer, m] = partial(torch.nn.functional.linear, tx, torch_weight)

    macs = {key: key[2] * LAYER_SHAPES[key[1]][0] * LAYER_SHAPES[key[1]][1] for key in calls}
    seconds: dict[tuple[str, str, int], list[float]] = {key: [] for key in calls}
    with torch.inference_mode():
        for key, call in calls.items():  # warm-up: packing, first-call allocations
            time_call(call, macs[key], args.gmacs * 1e8)
        for _ in range(args.rounds):
            for key, call in calls.items():
                # Idle threads of the previous engine spin for a while before they sleep (OpenMP's for up to
                # 200 ms); let them, so each timing has the cores to itself.
                time.sleep(args.pause)
                seconds[key].append(time_call(call, macs[key], args.gmacs * 1e9))

    def gmacs(engine: str, layer: str, m: int) -> float:
        return macs[engine, layer, m] / statistics.median(seconds[engine, layer, m]) / 1e9

    def layer_gmacs(engine: str, m: int) -> float:  # one encoder layer: total MACs / total time
        total = sum(macs[engine, layer, m] for layer in LAYER_SHAPES)
        return total / sum(statistics.median(seconds[engine, layer, m]) for layer in LAYER_SHAPES) / 1e9

    print(
        f"machine: {cpu_description()}; {args.threads} threads; {args.rounds} rounds; "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}\n"
    )
    print(
        "| shape (tokens x in -> out) | "
        + " | ".join(f"{e} GMAC/s" for e in engines)
        + " | int8 / ORT fp32 | int8 / torch |"
    )
    print("|---|" + "---:|" * (len(engines) + 2))
    rows = [
        (f"{layer} {m} x {k} -> {n}", layer, m)
        for m in token_counts
        for layer, (k, n) in LAYER_SHAPES.items()
    ]
    rows += [(f"**one layer, {m} tokens**", "", m) for m in token_counts]
    for label, layer, m in rows:
        rate = {e: gmacs(e, layer, m) if layer else layer_gmacs(e, m) for e in engines}
        print(
            f"| {label} | "
            + " | ".join(f"{rate[e]:.1f}" for e in engines)
            + f" | {rate[engines[1]] / rate[engines[0]]:.2f}x | {rate[engines[1]] / rate[engines[2]]:.2f}x |"
        )


if __name__ == "__main__":
    main()
