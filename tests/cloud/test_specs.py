"""Schema checks of the CI workflows and Cloud Build config, hadolint on the training image; each check is
also shown to fail on a deliberately broken copy."""

from __future__ import annotations

from pathlib import Path

import yaml
from cloud_helpers import REPO, run_tool

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def check(schema: str, *files: Path):
    return run_tool("check-jsonschema", "--builtin-schema", schema, *files)


def test_workflows_match_the_github_schema():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "metrics-diff.yml"}
    result = check("vendor.github-workflows", *WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_broken_workflow_fails_the_schema(broken_copy):
    # `runs-on` misspelt: a job without a runner is rejected.
    bad = broken_copy(".github/workflows/ci.yml", "runs-on:", "runs_on:")
    result = check("vendor.github-workflows", bad)
    assert result.returncode != 0
    assert "runs_on" in result.stdout + result.stderr


def test_pr_report_is_commented_in_place_with_its_plots():
    wf = yaml.safe_load((REPO / ".github/workflows/metrics-diff.yml").read_text())
    steps = wf["jobs"]["diff"]["steps"]
    assert steps[0]["with"]["fetch-depth"] == 0
    runs = [s.get("run", "") for s in steps]
    assert any("scripts/pr_report.py" in r and "vl-convert-python" in r for r in runs)
    assert any(r.startswith("cml comment update") and "report/report.md" in r for r in runs)
    assert any(s.get("uses", "").startswith("iterative/setup-cml@") for s in steps)
    assert wf["permissions"]["pull-requests"] == "write"


def test_pipeline_job_runs_experiments_on_full_history_with_a_git_identity():
    """dvc exp run needs the history (dvc issue #7547) and a committer (#8844)."""
    job = yaml.safe_load((REPO / ".github/workflows/ci.yml").read_text())["jobs"]["pipeline"]
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    runs = [s.get("run", "") for s in job["steps"]]
    identity = next(i for i, r in enumerate(runs) if "git config --global user.email" in r)
    experiment = next(i for i, r in enumerate(runs) if "dvc exp run" in r)
    assert identity < experiment
    assert "-S profile=cpu" in runs[experiment]


def test_cloudbuild_matches_the_cloud_build_schema():
    result = check("vendor.cloudbuild", REPO / "cloudbuild.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_broken_cloudbuild_fails_the_schema(broken_copy):
    bad = broken_copy("cloudbuild.yaml", "machineType: E2_HIGHCPU_8", "machineType: E2_HUGE")
    result = check("vendor.cloudbuild", bad)
    assert result.returncode != 0
    assert "E2_HUGE" in result.stdout + result.stderr


def test_cloudbuild_pushes_both_images_by_commit_and_deploys_serve():
    build = yaml.safe_load((REPO / "cloudbuild.yaml").read_text())
    images = build["images"]
    assert {img.rsplit("/", 1)[1] for img in images} == {"train:$COMMIT_SHA", "serve:$COMMIT_SHA"}
    assert all(img.startswith("${_REGION}-docker.pkg.dev/$PROJECT_ID/") for img in images)
    deploy = next(s for s in build["steps"] if s["id"] == "deploy-serve")
    assert deploy["args"][:2] == ["run", "deploy"]
    assert f"--image={images[1]}" in deploy["args"]
    assert deploy["waitFor"] == ["push-serve"]


def test_dockerfile_train_passes_hadolint():
    result = run_tool("hadolint", REPO / "Dockerfile.train")
    assert result.returncode == 0, result.stdout + result.stderr


def test_broken_dockerfile_fails_hadolint(broken_copy):
    bad = broken_copy("Dockerfile.train", "FROM python:3.11-slim-bookworm", "FROM python:latest")
    result = run_tool("hadolint", bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # using latest


def test_dockerfile_train_installs_from_the_lock_in_two_layers_as_non_root():
    text = (REPO / "Dockerfile.train").read_text()
    deps = text.index("uv sync --frozen --no-install-project")
    project = text.index("COPY --chown=10001:10001 . /app")
    assert deps < project
    assert "UV_COMPILE_BYTECODE=1" in text
    assert "USER 10001" in text
