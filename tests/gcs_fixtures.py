"""A session-wide Google Cloud Storage emulator on loopback, for tests of ``gs://`` reads and writes.

Use it from any test module with ``pytest_plugins = ["gcs_fixtures"]`` (``tests/`` is on ``sys.path`` under
pytest's default import mode) and a ``gcs_emulator`` argument. One emulator serves the whole session; each
test that asks for it gets ``STORAGE_EMULATOR_HOST`` pointing gcsfs and google-cloud-storage at it, so nothing
leaves the machine.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

# gcsfs reads this when first imported; left at its default, every call against the emulator hangs ~60 s.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


@dataclass(frozen=True)
class GcsEmulator:
    endpoint: str  # http://127.0.0.1:<port>
    bucket: str  # created empty at start

    def url(self, path: str) -> str:
        return f"gs://{self.bucket}/{path.lstrip('/')}"

    def filesystem(self):  # -> gcsfs.GCSFileSystem
        import gcsfs

        return gcsfs.GCSFileSystem(token="anon", endpoint_url=self.endpoint)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator_server() -> Iterator[GcsEmulator]:
    """Start ``gcp-storage-emulator`` (in memory) once per session with one empty bucket, ``test-bucket``."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="test-bucket")
    server.start()
    try:
        yield GcsEmulator(endpoint=f"http://127.0.0.1:{port}", bucket="test-bucket")
    finally:
        server.stop()


@pytest.fixture
def gcs_emulator(gcs_emulator_server: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> GcsEmulator:
    """The session's emulator, with ``STORAGE_EMULATOR_HOST`` pointing at it for this test only."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator_server.endpoint)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    return gcs_emulator_server
