"""Fixtures of the cloud/CI tests: broken copies of specs, and a real GCS API (gcp-storage-emulator)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud_helpers import REPO, free_port, tool, wait_for_http


@pytest.fixture
def broken_copy(tmp_path: Path):
    """Write a copy of a repo file with one text replacement applied, asserting the replacement happened."""

    def make(rel_path: str, old: str, new: str, name: str | None = None) -> Path:
        text = (REPO / rel_path).read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {rel_path}"
        out = tmp_path / (name or Path(rel_path).name)
        out.write_text(text.replace(old, new, 1), encoding="utf-8")
        return out

    return make


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gcp-storage-emulator on a free loopback port for the whole session; yields its endpoint URL."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("gcs-emulator") / "emulator.log"
    cmd = [tool("gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"{endpoint}/storage/v1/b?project=test", timeout=30)
    except Exception:
        proc.kill()
        pytest.fail(f"gcp-storage-emulator did not start:\n{log.read_text()}")
    yield endpoint
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def gcs_env(gcs_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point gcsfs and dvc-gs at the emulator (in this process and in subprocesses); returns the endpoint."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    return gcs_server


@pytest.fixture
def bucket(gcs_env: str) -> str:
    """A fresh, empty bucket in the emulator."""
    from gcsfs.core import GCSFileSystem

    name = f"test-{uuid.uuid4().hex[:12]}"
    GCSFileSystem(token="anon", endpoint_url=gcs_env, skip_instance_cache=True).mkdir(name)
    return name
