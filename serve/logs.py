"""Logging of the server process: uvicorn's loggers and the app's ``serve`` logger, as text or one JSON object
per line (``ARXIV_EMBED_LOG_FORMAT=json``: ``severity``, ``message``, ``logger``, ``time``, as Cloud Logging
reads them). Only ``python -m serve`` applies it, as uvicorn's ``log_config``: importing configures nothing."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal


class JsonFormatter(logging.Formatter):
    """One JSON object per record; an exception's traceback goes into ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        entry = {
            "severity": record.levelname,
            "message": message,
            "logger": record.name,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        }
        return json.dumps(entry, ensure_ascii=False)


def log_config(fmt: Literal["text", "json"], level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn and the app, on stderr."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "loggers": {
            name: {"handlers": ["default"], "level": level, "propagate": False}
            for name in ("serve", "uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
