"""``python -m serve``: the API on ``$PORT`` with the environment's settings (what the container runs).

Invalid settings (an empty ``ARXIV_EMBED_API_KEY``, a grace period shorter than the queue's wait) stop it at
start with one line and exit code 2. On SIGTERM or Ctrl-C it drains (``serve.lifecycle``) and exits 0.
"""

from __future__ import annotations

import math
import signal
import sys

import uvicorn
from pydantic import ValidationError

from serve.app import create_app
from serve.lifecycle import DrainingServer
from serve.logs import log_config
from serve.settings import get_settings, settings_error


def main() -> None:
    try:
        settings = get_settings()
    except ValidationError as e:
        print(f"arxiv-embed: {settings_error(e)}", file=sys.stderr)
        sys.exit(2)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config(settings.log_format, settings.log_level),
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
    )
    # uvicorn re-raises the stop signal once it has stopped; ignored, the drained server exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    DrainingServer(config, app.state.lifecycle).run()


if __name__ == "__main__":
    main()
