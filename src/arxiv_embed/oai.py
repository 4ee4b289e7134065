"""Harvest arXiv metadata over OAI-PMH into JSON lines of the arXiv snapshot schema, resumably.

One harvest is a query (base URL, sets, date range) run with ``ListRecords`` and ``metadataPrefix=arXiv``, one
set after the other, following resumption tokens. Each page is checkpointed in the harvest folder: its records
are appended to ``records.jsonl`` and fsynced, then ``state.json`` (next set and token, byte length of the
records file) is replaced atomically. A harvest killed at any point resumes from the last saved state: records
of a page whose state was not saved are cut off and fetched again, so nothing is lost or repeated.

HTTP uses the standard library only; a 503 with Retry-After waits as asked, other transient failures
(connection errors, 5xx, 429, a malformed page) are retried with exponential backoff, and consecutive
requests are spaced by a polite delay.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

DEFAULT_BASE_URL = "https://oaipmh.arxiv.org/oai"
USER_AGENT = "arxiv-embed-harvester/0.1 (OAI-PMH; +https://info.arxiv.org/help/oa/index.html)"

_NS = {"oai": "http://www.openarchives.org/OAI/2.0/", "arxiv": "http://arxiv.org/OAI/arXiv/"}
# Text fields of the arXiv metadata format, as named in the snapshot (the snapshot spells them the same).
_TEXT_FIELDS = ("title", "comments", "journal-ref", "doi", "report-no", "categories", "license", "abstract")

RECORDS_FILE = "records.jsonl"
MAX_SET_RESTARTS = 3  # per run: restarts of a set whose resumption token expired
STATE_FILE = "state.json"


class OaiError(RuntimeError):
    """The server answered with an OAI-PMH error (its ``code``), or kept failing after all retries."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class TransientError(OaiError):
    """A failure worth retrying: connection error, 5xx/429, or a page that is not valid OAI-PMH XML."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Query:
    """What to harvest: ``sets`` (``cs``, ``math``, ``physics:hep-th``) between ``YYYY-MM-DD`` dates."""

    base_url: str = DEFAULT_BASE_URL
    sets: tuple[str, ...] = ()
    from_date: str | None = None
    until_date: str | None = None

    def __post_init__(self) -> None:
        if not self.sets:
            raise ValueError("OAI harvest: give at least one set (e.g. 'cs', 'math', 'physics:hep-th')")
        for value in (self.from_date, self.until_date):
            if value is not None:
                try:
                    datetime.strptime(value, "%Y-%m-%d")
                except ValueError:
                    raise ValueError(f"OAI harvest: date {value!r} is not YYYY-MM-DD") from None


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one request: attempts, backoff ``base * 2**attempt`` (capped), longest Retry-After."""

    attempts: int = 8
    backoff_base: float = 2.0
    backoff_max: float = 120.0
    retry_after_max: float = 600.0
    timeout: float = 120.0


@dataclass(frozen=True)
class Page:
    """One ListRecords answer: its records as snapshot rows (deleted records left out) and the next token."""

    rows: list[dict[str, Any]]
    token: str | None
    complete_list_size: int | None


# --- pure functions -------------------------------------------------------------------------------------


def list_records_url(query: Query, set_spec: str, token: str | None) -> str:
    """URL of one ListRecords request: the first of a set, or the one resuming from ``token``."""
    if token is not None:
        params = {"verb": "ListRecords", "resumptionToken": token}
    else:
        params = {"verb": "ListRecords", "metadataPrefix": "arXiv", "set": set_spec}
        if query.from_date:
            params["from"] = query.from_date
        if query.until_date:
            params["until"] = query.until_date
    return f"{query.base_url}?{urllib.parse.urlencode(params)}"


def _text(parent: ET.Element, path: str) -> str | None:
    element = parent.find(path, _NS)
    return None if element is None else (element.text or "")


def record_to_row(record: ET.Element) -> dict[str, Any] | None:
    """Snapshot row of one OAI ``<record>`` in the arXiv format; None for a deleted record.

    Keys follow the public arXiv snapshot: id, authors, title, comments, journal-ref, doi, report-no,
    categories, license, abstract, update_date, authors_parsed (``[keyname, forenames, suffix]``). Text is
    kept as the server sends it (line breaks included); missing elements are None. ``update_date`` is the
    paper's ``updated`` date, else ``created``, else the record's datestamp. The snapshot's ``submitter`` and
    ``versions`` exist only in the ``arXivRaw`` format and are left out.
    """
    header = record.find("oai:header", _NS)
    if header is None:
        raise TransientError("OAI record without a header")
    if header.get("status") == "deleted":
        return None
    meta = record.find("oai:metadata/arxiv:arXiv", _NS)
    if meta is None:
        raise TransientError(f"OAI record {_text(header, 'oai:identifier')} has no arXiv metadata")
    authors_parsed = [
        [
            _text(author, "arxiv:keyname") or "",
            _text(author, "arxiv:forenames") or "",
            _text(author, "arxiv:suffix") or "",
        ]
        for author in meta.findall("arxiv:authors/arxiv:author", _NS)
    ]
    names = [" ".join(part for part in (fore, key, suffix) if part) for key, fore, suffix in authors_parsed]
    row: dict[str, Any] = {"id": _text(meta, "arxiv:id"), "authors": ", ".join(names)}
    for field in _TEXT_FIELDS:
        row[field] = _text(meta, f"arxiv:{field}")
    row["update_date"] = (
        _text(meta, "arxiv:updated") or _text(meta, "arxiv:created") or _text(header, "oai:datestamp")
    )
    row["authors_parsed"] = authors_parsed
    return row


def parse_page(xml: bytes) -> Page:
    """Parse one ListRecords response.

    ``noRecordsMatch`` is an empty, final page. Other OAI errors raise :class:`OaiError`; text that is not
    an OAI-PMH document raises :class:`TransientError` (a truncated page is worth fetching again).
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise TransientError(f"malformed OAI-PMH page ({e})") from None
    if root.tag != f"{{{_NS['oai']}}}OAI-PMH":
        raise TransientError(f"not an OAI-PMH document (root element {root.tag!r})")
    errors = root.findall("oai:error", _NS)
    if errors:
        codes = [e.get("code", "") for e in errors]
        if codes == ["noRecordsMatch"]:
            return Page(rows=[], token=None, complete_list_size=0)
        details = "; ".join(f"{e.get('code')}: {(e.text or '').strip()}" for e in errors)
        raise OaiError(f"OAI-PMH error: {details}", code=codes[0])
    listing = root.find("oai:ListRecords", _NS)
    if listing is None:
        raise TransientError("OAI-PMH page has neither ListRecords nor error")
    rows = [row for r in listing.findall("oai:record", _NS) if (row := record_to_row(r)) is not None]
    token_el = listing.find("oai:resumptionToken", _NS)
    token = (token_el.text or "").strip() if token_el is not None else ""
    size = token_el.get("completeListSize") if token_el is not None else None
    return Page(rows=rows, token=token or None, complete_list_size=int(size) if size else None)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or HTTP-date); None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff_seconds(attempt: int, policy: RetryPolicy, retry_after: float | None) -> float:
    """Wait before retry ``attempt + 1``: the server's Retry-After if given, else exponential backoff."""
    if retry_after is not None:
        return min(retry_after, policy.retry_after_max)
    return min(policy.backoff_base * 2**attempt, policy.backoff_max)


# --- HTTP -------------------------------------------------------------------------------------------------


def http_get(url: str, timeout: float) -> bytes:
    """GET ``url``; raise :class:`TransientError` for what is worth retrying, :class:`OaiError` otherwise."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        if e.code in (429, 500, 502, 503, 504):
            wait = parse_retry_after(e.headers.get("Retry-After"))
            raise TransientError(f"HTTP {e.code} from {url}", retry_after=wait) from None
        raise OaiError(f"HTTP {e.code} {e.reason} from {url}") from None
    except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, cut off mid-body
        raise TransientError(f"cannot read {url}: {e!r}") from None


class Client:
    """Fetches and parses pages with retries, spacing consecutive requests by ``delay`` seconds."""

    def __init__(self, delay: float = 3.0, policy: RetryPolicy = RetryPolicy()):
        self.delay = delay
        self.policy = policy
        self._last: float | None = None
        self.requests = 0
        self.retries = 0

    def _wait_politely(self) -> None:
        if self._last is not None:
            remaining = self.delay - (time.monotonic() - self._last)
            if remaining > 0:
                time.sleep(remaining)

    def fetch_page(self, url: str) -> Page:
        for attempt in range(self.policy.attempts):
            self._wait_politely()
            self.requests += 1
            try:
                return parse_page(http_get(url, self.policy.timeout))
            except TransientError as e:
                if attempt + 1 == self.policy.attempts:
                    raise OaiError(f"giving up after {self.policy.attempts} attempts: {e}") from None
                self.retries += 1
                time.sleep(backoff_seconds(attempt, self.policy, e.retry_after))
            finally:
                self._last = time.monotonic()
        raise AssertionError("unreachable")


# --- checkpointed harvest -----------------------------------------------------------------------------------


def _query_dict(query: Query) -> dict[str, Any]:
    data = dataclasses.asdict(query)
    data["sets"] = list(query.sets)
    return data


def query_key(query: Query) -> str:
    """A short stable name for ``query``, to keep the harvests of different queries in different folders."""
    blob = json.dumps(_query_dict(query), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _initial_state(query: Query) -> dict[str, Any]:
    return {"query": _query_dict(query), "set_index": 0, "token": None, "bytes": 0, "records": 0, "pages": 0}


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(out_dir: Path, query: Query) -> dict[str, Any]:
    """Saved state of the harvest in ``out_dir``, or a fresh one; a folder of another query is an error."""
    path = out_dir / STATE_FILE
    if not path.exists():
        return _initial_state(query)
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("query") != _query_dict(query):
        raise OaiError(
            f"{out_dir} holds a harvest of another query ({state.get('query')}); "
            "use another folder or delete it to start over"
        )
    return state


def is_complete(state: dict[str, Any]) -> bool:
    return state["set_index"] >= len(state["query"]["sets"])


def _seen_ids(records: Path) -> set[str]:
    with open(records, "rb") as f:
        return {json.loads(line)["id"] for line in f}


def harvest(query: Query, out_dir: str | Path, client: Client | None = None, progress: bool = True) -> Path:
    """Run or resume the harvest of ``query`` in ``out_dir``; return the path of the finished records file.

    Records repeated across sets (or pages) are written once, in order of first appearance. A set whose
    resumption token has expired (``badResumptionToken``, e.g. resuming long after a crash) is fetched again
    from its start, skipping the records already written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    client = client or Client()
    state_path, records_path = out_dir / STATE_FILE, out_dir / RECORDS_FILE
    state = load_state(out_dir, query)
    with open(records_path, "ab") as f:
        # Records past the saved length belong to a page whose state was never saved: drop and refetch.
        f.truncate(state["bytes"])
    seen = _seen_ids(records_path)
    bar = tqdm(desc="OAI-PMH harvest", unit="rec", initial=state["records"], disable=not progress)
    restarts, counted = 0, set[str]()
    try:
        while not is_complete(state):
            set_spec = query.sets[state["set_index"]]
            bar.set_postfix_str(f"set={set_spec}")
            try:
                page = client.fetch_page(list_records_url(query, set_spec, state["token"]))
            except OaiError as e:
                if e.code != "badResumptionToken" or state["token"] is None or restarts >= MAX_SET_RESTARTS:
                    raise
                # Tokens expire: fetch the set again from its start; records already written are skipped.
                restarts += 1
                bar.write(f"OAI-PMH: resumption token expired, restarting set {set_spec}")
                state = {**state, "token": None}
                continue
            if page.complete_list_size is not None and state["token"] is None and set_spec not in counted:
                counted.add(set_spec)
                bar.total = (bar.total or 0) + page.complete_list_size
            lines = []
            for row in page.rows:
                if row["id"] not in seen:
                    seen.add(row["id"])
                    lines.append(json.dumps(row, ensure_ascii=False) + "\n")
            data = "".join(lines).encode("utf-8")
            with open(records_path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            state = {
                **state,
                "bytes": state["bytes"] + len(data),
                "records": state["records"] + len(lines),
                "pages": state["pages"] + 1,
                "token": page.token,
                "set_index": state["set_index"] + (page.token is None),
            }
            _write_state(state_path, state)
            bar.update(len(lines))
    finally:
        bar.close()
    return records_path
