"""scripts/pr_report.py: the pull-request report, with its checks, diffs and plots rendered to PNG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import pr_report  # noqa: E402


def test_checks_say_when_fine_tuning_makes_the_model_worse() -> None:
    metrics = {
        "metrics/ir_eval.json": {
            "finetuned_precision@10": 0.297,
            "untuned_precision@10": 0.343,
            "finetuned_map@100": 0.30,
            "untuned_map@100": 0.20,
        },
        "metrics/logreg.json": {"finetuned_accuracy": 0.55, "finetuned_macro_f1": 0.2},
        "metrics/tfidf_baseline.json": {"tfidf_accuracy": 0.49, "tfidf_macro_f1": 0.23},
    }
    lines = pr_report.checks(metrics)
    worse = next(line for line in lines if "precision@10" in line)
    assert worse.startswith("- ❌") and "0.2970 vs 0.3430" in worse and "worse than not training" in worse
    assert next(line for line in lines if "map@100" in line).startswith("- ✅")
    assert any(line.startswith("- ❌ classifier macro_f1") for line in lines)
    assert any(line.startswith("- ✅ classifier accuracy") for line in lines)


def test_nominal_plots_get_a_row_per_label() -> None:
    spec = {"encoding": {"y": {"field": "subject", "type": "nominal"}}, "width": "container"}
    assert pr_report.sized(spec)["height"] == {"step": 12} and pr_report.sized(spec)["width"] == 560
    assert pr_report.sized({"encoding": {"y": {"type": "quantitative"}}})["height"] == 280


@pytest.mark.slow
def test_report_of_the_repository_against_its_own_head(tmp_path: Path) -> None:
    """The committed metrics and plots against HEAD: every section, every plot a PNG."""
    out = tmp_path / "report"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "pr_report.py"),
            "HEAD",
            "--out",
            str(out),
            "--commit",
            "abc",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = (out / "report.md").read_text()
    for heading in ("#### Checks", "#### Metrics", "#### Params", "#### Plots"):
        assert heading in text
    assert "metrics/ir_eval.json" in text and "_Commit abc_" in text
    images = sorted(out.glob("*.png"))
    assert {p.name for p in images} >= {"plots_ir_eval_per_subject_csv.png", "plots_logreg_confusion_csv.png"}
    for image in images:
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](./{image.name})" in text
