"""``python -m serve.healthcheck``: exit 0 if the API on ``$PORT`` answers ``/health`` (the HEALTHCHECK)."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def healthy(port: int, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main() -> None:
    sys.exit(0 if healthy(int(os.environ.get("PORT", "8080"))) else 1)


if __name__ == "__main__":
    main()
