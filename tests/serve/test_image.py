"""Dockerfile.serve without Docker: hadolint, a torch-free runtime, mounts that buildah and Docker both accept, the
image's own command line serving requests (a real process on a loopback port, started the way the container starts
it), and the smoke-test scripts of scripts/image_smoke.sh against such a process."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from serve_helpers import free_port, wait_for_health

pytest_plugins = ["onnx_fixtures"]  # onnx_minilm_dir: the bundled MiniLM exported once per session

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile.serve"
DOCKERFILES = [DOCKERFILE, REPO / "Dockerfile.train"]
PIPELINE_ONLY = {"torch", "sentence-transformers", "transformers", "datasets", "onnx", "dvc"}


def instruction(name: str) -> str:
    """The last ``name`` instruction of Dockerfile.serve (continuation lines joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith(f"{name} ")]
    assert lines, f"no {name} in {DOCKERFILE.name}"
    return lines[-1][len(name) + 1 :].strip()


def exec_form(name: str) -> list[str]:
    argv = json.loads(instruction(name).split(" CMD ", 1)[-1])
    assert isinstance(argv, list), f"{name} must use the exec form"
    return argv


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_installs_the_base_dependencies_only() -> None:
    syncs = [line for line in DOCKERFILE.read_text().splitlines() if "uv sync" in line]
    assert syncs and all("--no-default-groups" in s and "--group" not in s and "--frozen" in s for s in syncs)
    base = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("[")[0].split("=")[0].strip().lower() for d in base}
    assert not names & PIPELINE_ONLY
    # What `uv sync --no-default-groups` installs, resolved from the lock: nothing pulls torch in.
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    exported = subprocess.run(
        [uv, "export", "--frozen", "--no-default-groups", "--no-hashes", "--no-emit-project"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    locked = {line.split("==")[0].strip().lower() for line in exported.splitlines() if "==" in line}
    assert {"onnxruntime", "fastapi", "faiss-cpu"} <= locked
    assert not locked & PIPELINE_ONLY


def test_serving_code_imports_no_pipeline_package() -> None:
    code = (
        "import sys, serve.app, serve.__main__, serve.healthcheck; "
        "print(sorted({'torch', 'transformers', 'sentence_transformers', 'datasets'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_image_command_serves_on_port(
    onnx_minilm_dir: Path, index_dir: Path, classifier_dir: Path, tmp_path: Path
) -> None:
    """CMD with the image's environment (models from ARXIV_EMBED_*, port from $PORT), then HEALTHCHECK."""
    command = exec_form("CMD")
    assert command[0] == "python"
    healthcheck = exec_form("HEALTHCHECK")
    assert healthcheck[0] == "python"
    port = free_port()
    env = os.environ | {
        "PORT": str(port),
        "ARXIV_EMBED_MODEL_DIR": str(onnx_minilm_dir),
        "ARXIV_EMBED_INDEX_DIR": str(index_dir),
        "ARXIV_EMBED_CLASSIFIER_DIR": str(classifier_dir),
        "ARXIV_EMBED_HOST": "127.0.0.1",  # the image listens on 0.0.0.0; a test stays on loopback
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, *command[1:]], cwd=REPO, env=env, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url)
        info = httpx.get(f"{url}/info").json()
        assert (info["index_size"], info["classifier_classes"]) == (6, 3)
        response = httpx.post(f"{url}/embed", json={"input": ["Graph neural networks", "Dark matter"]})
        assert response.status_code == 200
        assert len(response.json()["embeddings"]) == 2
        probe = subprocess.run([sys.executable, *healthcheck[1:]], env=env, cwd=REPO, check=False, timeout=30)
        assert probe.returncode == 0
    finally:
        server.send_signal(signal.SIGTERM)  # docker stop
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal when done
    assert "Application shutdown complete" in log.read_text()
    down = subprocess.run([sys.executable, *healthcheck[1:]], env=env, cwd=REPO, check=False, timeout=30)
    assert down.returncode == 1


def run_instructions(dockerfile: Path) -> list[str]:
    text = dockerfile.read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip().startswith("RUN ")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_bind_mount_targets_are_absolute(dockerfile: Path) -> None:
    """buildah rejects a relative bind target (``target=uv.lock``); an absolute one means the same to Docker."""
    mounts = [m for run in run_instructions(dockerfile) for m in re.findall(r"--mount=type=bind,\S+", run)]
    targets = [re.findall(r"target=([^,]+)", mount)[0] for mount in mounts]
    assert targets, f"{dockerfile.name}: no bind mount"
    assert all(t.startswith("/") for t in targets), targets


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_download_may_trust_a_build_secret_ca(dockerfile: Path) -> None:
    """Each RUN that runs uv can trust a re-signing proxy's CA, from a secret mount only (not COPY or ENV)."""
    syncs = [run for run in run_instructions(dockerfile) if "uv sync" in run]
    assert syncs
    for run in syncs:
        assert "--mount=type=secret,id=ca,target=/run/secrets/ca" in run, run
        assert "if [ -f /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi" in run, run
    others = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in others if "SSL_CERT_FILE" in line and "export SSL_CERT_FILE" not in line]


@pytest.mark.slow
def test_smoke_scripts_against_the_image_command(tmp_path: Path) -> None:
    """scripts/image_models.py's artefacts served by the image's CMD pass scripts/image_smoke_check.py, which
    fails on a wrong key."""
    models = tmp_path / "models"
    subprocess.run(
        [sys.executable, "scripts/image_models.py", str(models)], cwd=REPO, check=True, timeout=600
    )
    assert sorted(p.name for p in models.iterdir()) == ["classifier", "faiss", "onnx"]
    port = free_port()
    env = os.environ | {
        "PORT": str(port),
        "ARXIV_EMBED_MODEL_DIR": str(models / "onnx"),
        "ARXIV_EMBED_INDEX_DIR": str(models / "faiss"),
        "ARXIV_EMBED_CLASSIFIER_DIR": str(models / "classifier"),
        "ARXIV_EMBED_HOST": "127.0.0.1",
        "ARXIV_EMBED_API_KEY": "smoke-key",
    }
    server = subprocess.Popen([sys.executable, *exec_form("CMD")[1:]], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    check = [sys.executable, "scripts/image_smoke_check.py", url, "--fixtures", "--key"]
    try:
        wait_for_health(url)
        passed = subprocess.run([*check, "smoke-key"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert passed.returncode == 0, passed.stdout + passed.stderr
        assert [line.split()[1] for line in passed.stdout.splitlines()] == [
            "/health",
            "/info",
            "/embed",
            "/search",
            "/classify",
        ]
        failed = subprocess.run([*check, "wrong-key"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert failed.returncode == 1
        assert "smoke check failed" in failed.stderr and "/info: 401" in failed.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
