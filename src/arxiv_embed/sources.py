"""Where raw arXiv metadata comes from: a snapshot file in the arXiv JSON Lines schema.

Local paths and fsspec URLs (``https://``, ``gs://``, ...) are streamed line by line, gzip or plain (told apart by
content, not by name), so memory stays bounded whatever the file size.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator

import fsspec

_GZIP_MAGIC = b"\x1f\x8b"


def iter_lines(uri: str) -> Iterator[bytes]:
    """Yield the raw lines (bytes, newline stripped) of a plain or gzip JSON Lines file at ``uri``."""
    try:
        opened = fsspec.open(uri, "rb")
        raw = opened.open()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"input not found: {uri}") from e
    with raw:
        buffered = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
        stream = gzip.GzipFile(fileobj=buffered) if buffered.peek(2)[:2] == _GZIP_MAGIC else buffered
        try:
            for line in stream:
                yield line.rstrip(b"\r\n")
        except (OSError, EOFError) as e:  # truncated or corrupt gzip
            raise OSError(f"cannot read {uri}: {e}") from e
