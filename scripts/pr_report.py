"""The pull-request report: metrics, params and plots of the workspace against a base revision, as Markdown + PNG.

    python scripts/pr_report.py origin/main --out report      # report/report.md and report/*.png

What it holds, all read through DVC from git (metrics and plots are git-tracked, so no remote is needed):

1. checks a reviewer should not have to work out: the fine-tuned model against the untuned one and the embedding
   classifier against TF-IDF, in this run;
2. ``dvc metrics diff --md --all`` and ``dvc params diff --md`` against the base;
3. the plots of ``dvc plots diff`` (both revisions in each chart), rendered to PNG without a browser by
   vl-convert: per-subject precision@10, the confusion matrix, F1 per subject and the training curves.

DVC runs as ``python -m dvc`` of this interpreter, so ``uv run --no-project --with dvc==... --with
vl-convert-python python scripts/pr_report.py`` needs no project install (the metrics-diff workflow does that).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

# dvc plots ids -> title in the report, in the order shown.
PLOTS = {
    "plots/ir_eval_per_subject.csv": "precision@10 per subject (ir_eval, fine-tuned)",
    "plots/logreg_per_class.csv": "F1 per subject (logreg on the fine-tuned embeddings)",
    "plots/logreg_confusion.csv": "subject confusion (logreg, test split)",
    "metrics/train_log/plots/metrics/loss.tsv": "training loss",
    "metrics/train_log/plots/metrics/eval/val_cosine_precision@10.tsv": "validation precision@10 during training",
    "metrics/train_log/plots/metrics/learning_rate.tsv": "learning rate",
}


def dvc(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout


def checks(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """One line per comparison that tells whether this run is worth having (workspace values)."""

    def value(file: str, key: str) -> float | None:
        found = metrics.get(file, {}).get(key)
        return float(found) if isinstance(found, int | float) else None

    lines = []
    pairs = [
        ("metrics/ir_eval.json", "precision@10", "finetuned_", "untuned_", "fine-tuned vs untuned"),
        ("metrics/ir_eval.json", "map@100", "finetuned_", "untuned_", "fine-tuned vs untuned"),
        ("metrics/logreg.json", "accuracy", "finetuned_", "untuned_", "classifier, fine-tuned vs untuned"),
    ]
    for file, key, new, old, label in pairs:
        a, b = value(file, new + key), value(file, old + key)
        if a is not None and b is not None:
            mark = "✅" if a > b else "❌"
            verdict = "better" if a > b else "**not better: the run makes the model worse than not training**"
            lines.append(f"- {mark} {label} {key}: {a:.4f} vs {b:.4f}, {verdict}")
    for key in ("accuracy", "macro_f1"):
        a, b = (
            value("metrics/logreg.json", f"finetuned_{key}"),
            value("metrics/tfidf_baseline.json", f"tfidf_{key}"),
        )
        if a is not None and b is not None:
            lines.append(
                f"- {'✅' if a > b else '❌'} classifier {key}: embeddings {a:.4f} vs TF-IDF {b:.4f}"
            )
    drop = value("metrics/onnx_export.json", "int8_precision@10_drop")
    if drop is not None:
        lines.append(f"- int8 ONNX precision@10 drop against fp32: {drop:+.4f}")
    return lines


def workspace_metrics(diff: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``dvc metrics diff --json --all`` -> {file: {key: new value}}."""
    return {file: {k: v.get("new") for k, v in keys.items()} for file, keys in diff.items()}


def sized(spec: dict[str, Any]) -> dict[str, Any]:
    """A DVC template spec with a size that renders outside a browser (templates say "container")."""
    spec = dict(spec)
    spec["width"] = 560
    encoding = (spec.get("encoding") or {}) if isinstance(spec.get("encoding"), dict) else {}
    y = encoding.get("y") or {}
    spec["height"] = {"step": 12} if y.get("type") == "nominal" else 280
    return spec


def slug(plot_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", plot_id).strip("_")


def render_plots(base: str, out: Path) -> list[tuple[str, str]]:
    """(title, png file name) of each plot in :data:`PLOTS` that either revision has."""
    import vl_convert

    found = json.loads(dvc("plots", "diff", base, "--json") or "{}").get("data", {})
    rendered = []
    for plot_id, title in PLOTS.items():
        entries = [e for e in found.get(plot_id, []) if e.get("type") == "vega"]
        if not entries:
            continue
        name = f"{slug(plot_id)}.png"
        (out / name).write_bytes(vl_convert.vegalite_to_png(sized(entries[0]["content"]), scale=1.5))
        rendered.append((title, name))
    return rendered


def report(base: str, out: Path, commit: str = "") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    metrics_diff = json.loads(dvc("metrics", "diff", base, "--all", "--json") or "{}")
    lines = [f"### DVC report against `{base}`", ""]
    found = checks(workspace_metrics(metrics_diff))
    if found:
        lines += ["#### Checks", *found, ""]
    lines += ["#### Metrics", dvc("metrics", "diff", base, "--all", "--md").strip() or "_no metrics_", ""]
    lines += ["#### Params", dvc("params", "diff", base, "--md").strip() or "_no params changed_", ""]
    plots = render_plots(base, out)
    if plots:
        lines += ["#### Plots (both revisions in each chart)", ""]
        for title, name in plots:
            lines += [f"**{title}**", "", f"![{title}](./{name})", ""]
    if commit:
        lines.append(f"_Commit {commit}_")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("base", help="the revision to compare with (e.g. origin/main)")
    parser.add_argument("--out", default="report", help="folder for report.md and the PNG plots")
    parser.add_argument("--commit", default="", help="the commit the report is about (printed at the end)")
    args = parser.parse_args(argv)
    print(report(args.base, Path(args.out), args.commit))


if __name__ == "__main__":
    main()
