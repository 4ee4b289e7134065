"""Where raw arXiv metadata comes from: a snapshot file, arXiv's OAI-PMH interface or a Hugging Face dataset.

Every source yields JSON lines in the arXiv snapshot schema; :func:`iter_source_lines` picks one from params.

Local paths and fsspec URLs (``https://``, ``gs://``, ...) are streamed line by line, gzip or plain (told
apart by content, not by name), so memory stays bounded whatever the file size.
"""

from __future__ import annotations

import datetime
import gzip
import io
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec

from arxiv_embed import oai
from arxiv_embed.params import HfSourceParams, OaiSourceParams, SourceParams

__all__ = ["HfSourceParams", "OaiSourceParams", "SourceParams", "iter_source_lines", "local_path"]

_GZIP_MAGIC = b"\x1f\x8b"


class _ReadUntilEof(io.RawIOBase):
    """A raw reader over a file-like object that is not read again once it has returned EOF.

    An HTTP stream logs a warning on every read past its end, and gzip reads past the end to look for
    another member.
    """

    def __init__(self, f: Any):
        self._f = f
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._eof:
            return 0
        data = self._f.read(len(buffer))
        if not data:
            self._eof = True
            return 0
        buffer[: len(data)] = data
        return len(data)


def _open_options(uri: str) -> dict[str, Any]:
    """fsspec options: over http(s), one streaming response (block reads need Range support, which not every
    server has) and no limit on its total time (aiohttp's default is 5 minutes), only on each read."""
    if not uri.startswith(("http://", "https://")):
        return {}
    import aiohttp  # installed with fsspec's http support

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
    return {"block_size": 0, "client_kwargs": {"timeout": timeout}}


def iter_lines(uri: str) -> Iterator[bytes]:
    """Yield the raw lines (bytes, newline stripped) of a plain or gzip JSON Lines file at ``uri``."""
    try:
        opened = fsspec.open(uri, "rb", **_open_options(uri))
        raw = opened.open()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"input not found: {uri}") from e
    with raw:
        buffered = raw if hasattr(raw, "peek") else io.BufferedReader(_ReadUntilEof(raw), 1 << 20)
        stream = gzip.GzipFile(fileobj=buffered) if buffered.peek(2)[:2] == _GZIP_MAGIC else buffered
        try:
            for line in stream:
                yield line.rstrip(b"\r\n")
        except (OSError, EOFError) as e:  # truncated or corrupt gzip
            raise OSError(f"cannot read {uri}: {e}") from e


# --- choosing a source from params ---------------------------------------------------------------------


_SNAPSHOT_KEYS = (
    "id",
    "submitter",
    "authors",
    "title",
    "comments",
    "journal-ref",
    "doi",
    "report-no",
    "categories",
    "license",
    "abstract",
    "update_date",
    "authors_parsed",
    "versions",
)


def _plain_date(value: Any) -> Any:
    return value.isoformat()[:10] if isinstance(value, datetime.date) else value


def hf_row_to_snapshot(row: Mapping[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    """One dataset row in the snapshot schema: columns renamed, categories list joined, dates ``YYYY-MM-DD``.

    Snapshot keys the dataset lacks are None (``prepare`` drops rows that lack a required one).
    """
    renamed = {columns.get(key, key): value for key, value in row.items()}
    out = {key: _plain_date(renamed.get(key)) for key in _SNAPSHOT_KEYS}
    if isinstance(out["categories"], list | tuple):
        out["categories"] = " ".join(str(c) for c in out["categories"])
    return out


def iter_hf_lines(cfg: HfSourceParams) -> Iterator[bytes]:
    """Stream a Hugging Face dataset as snapshot JSON lines, without downloading it whole."""
    if not cfg.dataset:
        raise ValueError("prepare.source.hf.dataset is empty: give a hub id or a local dataset folder")
    import datasets  # the pipeline's dependency, not the API's

    rows = datasets.load_dataset(cfg.dataset, cfg.config, split=cfg.split, streaming=True)
    for row in rows:
        yield json.dumps(hf_row_to_snapshot(row, cfg.columns), ensure_ascii=False, default=str).encode()


def harvest_dir(cfg: OaiSourceParams, work_dir: str | Path) -> Path:
    """Folder of the OAI harvest of ``cfg``: one per query, so changing the query never mixes two harvests."""
    return Path(work_dir) / f"oai-{oai.query_key(_oai_query(cfg))}"


def _oai_query(cfg: OaiSourceParams) -> oai.Query:
    def day(value: str | datetime.date | None) -> str | None:
        return value.isoformat()[:10] if isinstance(value, datetime.date) else value

    return oai.Query(
        base_url=cfg.base_url,
        sets=tuple(cfg.sets),
        from_date=day(cfg.from_date),
        until_date=day(cfg.until_date),
    )


def local_path(uri: str) -> str:
    """Where a relative local ``uri`` lies: relative to the repository that runs the pipeline.

    DVC runs a stage with ``DVC_ROOT`` set to the repository's root, and keeps the main repository's root there
    when the stage runs in a temporary workspace (``dvc exp run --temp``, queued experiments under
    ``.dvc/tmp/exps/``), where a path such as ``../shared/...`` would otherwise point nowhere. Outside DVC the
    path is relative to the working folder. URLs and absolute paths are returned as they are.
    """
    if "://" in uri or Path(uri).is_absolute():
        return uri
    root = os.environ.get("DVC_ROOT")
    if root and not Path(uri).exists():
        return str(Path(root) / uri)
    return uri


def iter_source_lines(cfg: SourceParams, work_dir: str | Path, progress: bool = True) -> Iterator[bytes]:
    """Raw snapshot JSON lines of the source chosen in ``prepare.source``; the one call ``prepare`` makes.

    ``work_dir`` keeps what a source must store before it can be read (the OAI harvest and its checkpoint).
    """
    if cfg.kind == "file":
        if not cfg.uri:
            raise ValueError("prepare.source.uri is empty: give a snapshot path or URL, or another kind")
        uri = local_path(cfg.uri)
        if "://" not in uri and not Path(uri).exists():
            raise FileNotFoundError(
                f"input not found: {cfg.uri} (offline: point prepare.source.uri at a local snapshot; "
                "online: harvest arXiv, dvc exp run -S prepare.source.kind=oai; see docs/data-sources.md)"
            )
        return iter_lines(uri)
    if cfg.kind == "oai":
        client = oai.Client(delay=cfg.oai.delay)
        records = oai.harvest(_oai_query(cfg.oai), harvest_dir(cfg.oai, work_dir), client, progress=progress)
        return iter_lines(str(records))
    if cfg.kind == "hf":
        return iter_hf_lines(cfg.hf)
    raise ValueError(f"unknown prepare.source.kind {cfg.kind!r}; expected file, oai or hf")
