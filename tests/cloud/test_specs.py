"""Schema checks of the CI workflows and Cloud Build config, hadolint on the training image; each check is
also shown to fail on a deliberately broken copy."""

from __future__ import annotations

import os
import re
import subprocess
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
    assert deploy["waitFor"] == ["push-serve"]
    assert deploy["entrypoint"] == "bash"


def deploy_args(tmp_path: Path, **substitutions: str) -> list[str]:
    """The arguments the deploy step gives gcloud: its script, with Cloud Build's substitutions applied, run
    by bash against a stand-in gcloud that prints them."""
    build = yaml.safe_load((REPO / "cloudbuild.yaml").read_text())
    script = next(s for s in build["steps"] if s["id"] == "deploy-serve")["args"][1]
    values = build["substitutions"] | {"PROJECT_ID": "my-project", "COMMIT_SHA": "abc123"} | substitutions

    def substitute(match: re.Match[str]) -> str:
        return "$" if match.group(0) == "$$" else values[match.group(1) or match.group(2)]

    script = re.sub(r"\$\$|\$\{(\w+)\}|\$(\w+)", substitute, script)
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    env = os.environ | {"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, check=True)
    return done.stdout.splitlines()


def test_cloud_run_deploy_is_private_or_keyed_never_open(tmp_path: Path):
    private = deploy_args(tmp_path)
    assert private[:3] == ["run", "deploy", "arxiv-embed-api"]
    assert "--image=europe-west4-docker.pkg.dev/my-project/arxiv-embed/serve:abc123" in private
    assert "--no-allow-unauthenticated" in private
    assert "--allow-unauthenticated" not in private
    assert not [a for a in private if a.startswith("--set-secrets")]
    keyed = deploy_args(tmp_path, _API_KEY_SECRET="arxiv-embed-api-key")
    assert "--allow-unauthenticated" in keyed
    assert "--set-secrets=ARXIV_EMBED_API_KEY=arxiv-embed-api-key:latest" in keyed
    assert "--no-allow-unauthenticated" not in keyed


def test_cloud_run_deploy_probes_ready_and_health_with_cpu_boost(tmp_path: Path):
    args = deploy_args(tmp_path, _MIN_INSTANCES="1")
    assert "--cpu-boost" in args
    assert "--min-instances=1" in args
    startup = next(a for a in args if a.startswith("--startup-probe="))
    liveness = next(a for a in args if a.startswith("--liveness-probe="))
    assert "httpGet.path=/ready" in startup and "httpGet.port=8080" in startup
    assert "httpGet.path=/health" in liveness


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
