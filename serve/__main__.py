"""``python -m serve``: the API on ``$PORT`` with the environment's settings (what the container runs)."""

from __future__ import annotations

import uvicorn

from serve.app import create_app
from serve.settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
