"""A session-wide Google Cloud Storage emulator on loopback, for tests of ``gs://`` reads and writes.

Use it from any test folder with ``pytest_plugins = ["gcs_fixtures"]`` in a conftest (``tests/`` is on
``sys.path`` under pytest's default import mode) and a ``gcs_emulator`` argument. Nothing leaves the machine:
``STORAGE_EMULATOR_HOST`` points gcsfs and google-cloud-storage at the emulator, anonymous credentials.
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
def gcs_emulator() -> Iterator[GcsEmulator]:
    """Start ``gcp-storage-emulator`` (in memory) once per session with one bucket, ``test-bucket``."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="test-bucket")
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {key: os.environ.get(key) for key in ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")}
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", "test-project")
    try:
        yield GcsEmulator(endpoint=endpoint, bucket="test-bucket")
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
