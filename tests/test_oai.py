"""The OAI-PMH harvester, against handwritten pages served over real HTTP on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from oai_server import Script, deleted, oai_error, page, record, serve

from arxiv_embed import oai

FAST = oai.RetryPolicy(attempts=4, backoff_base=0.01, backoff_max=0.05, timeout=10)


def pages() -> dict[str, bytes]:
    """Set ``cs`` in three pages (a deleted record on the second), set ``math`` in one page that repeats a
    cross-listed cs paper, set ``q-bio`` with no records."""
    return {
        "set=cs": page(
            [record("2401.00001", "First", "cs.LG stat.ML"), record("2401.00002", "Second", "cs.CL")],
            "tok|2",
            size=5,
        ),
        "token=tok|2": page([record("2401.00003", "Third", "cs.CV"), deleted("2401.00004")], "tok|4", 2, 5),
        "token=tok|4": page([record("2401.00005", "Fifth", "cs.AI math.LO", updated=None)], None, 4, 5),
        "set=math": page(
            [
                record("2401.00005", "Fifth", "cs.AI math.LO", set_spec="math"),
                record("2401.00006", "Sixth", "math.AG"),
            ],
            None,
        ),
        "set=q-bio": oai_error("noRecordsMatch", "no records"),
    }


QUERY_SETS = ("cs", "math", "q-bio")
EXPECTED_IDS = ["2401.00001", "2401.00002", "2401.00003", "2401.00005", "2401.00006"]


def run_harvest(base_url: str, out: Path, client: oai.Client | None = None) -> Path:
    query = oai.Query(base_url=base_url, sets=QUERY_SETS, from_date="2024-01-01", until_date="2024-01-31")
    return oai.harvest(query, out, client or oai.Client(delay=0, policy=FAST), progress=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Records of an uninterrupted harvest without failures."""
    with serve(Script(pages())) as url:
        return run_harvest(url, tmp_path_factory.mktemp("reference")).read_bytes()


# --- pure functions ---------------------------------------------------------------------------------------


def test_record_to_snapshot_row() -> None:
    parsed = oai.parse_page(page([record("2401.00001", "A  title\n  on two lines", "cs.LG stat.ML")], None))
    assert parsed.token is None
    assert parsed.rows == [
        {
            "id": "2401.00001",
            "authors": "Ada Lovelace",
            "title": "A  title\n  on two lines",
            "comments": None,
            "journal-ref": None,
            "doi": None,
            "report-no": None,
            "categories": "cs.LG stat.ML",
            "license": None,
            "abstract": "  Abstract of 2401.00001,\non two lines.\n",
            "update_date": "2024-01-10",
            "authors_parsed": [["Lovelace", "Ada", ""]],
        }
    ]


def test_page_token_size_deleted_and_created_date() -> None:
    parsed = oai.parse_page(pages()["token=tok|2"])
    assert [r["id"] for r in parsed.rows] == ["2401.00003"]  # the deleted record is left out
    assert (parsed.token, parsed.complete_list_size) == ("tok|4", 5)
    last = oai.parse_page(pages()["token=tok|4"])
    assert last.token is None
    assert last.rows[0]["update_date"] == "2024-01-02"  # no <updated>: falls back to <created>


def test_oai_errors() -> None:
    assert oai.parse_page(oai_error("noRecordsMatch", "none")) == oai.Page([], None, 0)
    with pytest.raises(oai.OaiError, match="badResumptionToken: expired") as e:
        oai.parse_page(oai_error("badResumptionToken", "expired"))
    assert not isinstance(e.value, oai.TransientError)
    with pytest.raises(oai.TransientError, match="malformed"):
        oai.parse_page(pages()["set=cs"][:-40])
    with pytest.raises(oai.TransientError, match="not an OAI-PMH document"):
        oai.parse_page(b"<html><body>Service unavailable</body></html>")


def test_list_records_url() -> None:
    query = oai.Query(base_url="http://h/oai", sets=("physics:hep-th",), from_date="2024-01-01")
    first = oai.list_records_url(query, "physics:hep-th", None)
    assert first == "http://h/oai?verb=ListRecords&metadataPrefix=arXiv&set=physics%3Ahep-th&from=2024-01-01"
    assert oai.list_records_url(query, "physics:hep-th", "7|1001") == (
        "http://h/oai?verb=ListRecords&resumptionToken=7%7C1001"
    )


def test_query_validation() -> None:
    with pytest.raises(ValueError, match="at least one set"):
        oai.Query(sets=())
    with pytest.raises(ValueError, match="not YYYY-MM-DD"):
        oai.Query(sets=("cs",), until_date="31/01/2024")


def test_retry_after_and_backoff() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert oai.parse_retry_after("7") == 7.0
    assert oai.parse_retry_after("Mon, 01 Jan 2024 12:00:30 GMT", now=now) == 30.0
    assert oai.parse_retry_after("Mon, 01 Jan 2024 11:00:00 GMT", now=now) == 0.0
    assert oai.parse_retry_after("soon") is None
    assert oai.parse_retry_after(None) is None
    policy = oai.RetryPolicy(backoff_base=2, backoff_max=10, retry_after_max=60)
    assert [oai.backoff_seconds(a, policy, None) for a in range(4)] == [2, 4, 8, 10]
    assert oai.backoff_seconds(0, policy, 30) == 30
    assert oai.backoff_seconds(0, policy, 3600) == 60


# --- harvesting over HTTP ---------------------------------------------------------------------------------


def test_harvest_follows_tokens_across_sets(tmp_path: Path, reference: bytes) -> None:
    script = Script(pages())
    with serve(script) as url:
        out = run_harvest(url, tmp_path)
    rows = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["id"] for r in rows] == EXPECTED_IDS  # in order, cross-listed paper once, deleted one left out
    assert out.read_bytes() == reference
    assert script.requests[0] == {
        "verb": "ListRecords",
        "metadataPrefix": "arXiv",
        "set": "cs",
        "from": "2024-01-01",
        "until": "2024-01-31",
    }
    assert script.requests[1] == {"verb": "ListRecords", "resumptionToken": "tok|2"}
    assert [q.get("set") or q["resumptionToken"] for q in script.requests] == [
        "cs",
        "tok|2",
        "tok|4",
        "math",
        "q-bio",
    ]
    state = json.loads((tmp_path / oai.STATE_FILE).read_text())
    assert (state["records"], state["pages"], state["bytes"]) == (5, 5, len(reference))
    assert oai.is_complete(state)


def test_503_retry_after_and_malformed_page_are_retried(tmp_path: Path, reference: bytes) -> None:
    truncated = pages()["token=tok|4"][:100]
    script = Script(
        pages(),
        failures={
            "token=tok|2": [(503, {"Retry-After": "1"}, b"busy")],
            "token=tok|4": [(200, {}, truncated), (500, {}, b"oops")],
        },
    )
    client = oai.Client(delay=0, policy=FAST)
    with serve(script) as url:
        start = time.monotonic()
        out = run_harvest(url, tmp_path, client)
        elapsed = time.monotonic() - start
    assert out.read_bytes() == reference
    assert client.retries == 3
    assert len(script.requests) == 8
    assert elapsed >= 1.0  # waited as Retry-After asked


def test_body_cut_off_and_refused_connection_are_retried(tmp_path: Path, reference: bytes) -> None:
    cut = (200, {"Content-Length": "100000"}, pages()["token=tok|2"][:200])
    script = Script(pages(), failures={"token=tok|2": [cut]})
    client = oai.Client(delay=0, policy=FAST)
    with serve(script) as url:
        assert run_harvest(url, tmp_path / "cut", client).read_bytes() == reference
    assert client.retries == 1
    with pytest.raises(oai.OaiError, match="giving up after 4 attempts: cannot read"):
        run_harvest(url, tmp_path / "refused")  # the server is gone


def test_polite_delay_between_requests(tmp_path: Path) -> None:
    with serve(Script(pages())) as url:
        start = time.monotonic()
        query = oai.Query(base_url=url, sets=("cs",))
        oai.harvest(query, tmp_path, oai.Client(delay=0.3, policy=FAST), progress=False)
        elapsed = time.monotonic() - start
    assert elapsed >= 0.6  # three requests, two gaps


def test_persistent_failure_gives_up_then_resumes(tmp_path: Path, reference: bytes) -> None:
    broken = Script(pages(), failures={"token=tok|4": [(200, {}, b"<OAI-PMH")] * 4})
    with serve(broken) as url:
        with pytest.raises(oai.OaiError, match="giving up after 4 attempts: malformed"):
            run_harvest(url, tmp_path)
        state = json.loads((tmp_path / oai.STATE_FILE).read_text())
        assert (state["token"], state["records"]) == ("tok|4", 3)
        assert run_harvest(url, tmp_path).read_bytes() == reference  # the server is fine again


def test_expired_token_restarts_the_set_without_duplicates(tmp_path: Path, reference: bytes) -> None:
    expired = (200, {}, oai_error("badResumptionToken", "expired"))
    script = Script(pages(), failures={"token=tok|4": [expired]})
    with serve(script) as url:
        assert run_harvest(url, tmp_path).read_bytes() == reference
    steps = [q.get("set") or q["resumptionToken"] for q in script.requests]
    assert steps == ["cs", "tok|2", "tok|4", "cs", "tok|2", "tok|4", "math", "q-bio"]


def test_expired_token_that_keeps_expiring_fails(tmp_path: Path) -> None:
    expired = (200, {}, oai_error("badResumptionToken", "expired"))
    script = Script(pages(), failures={"token=tok|2": [expired] * (oai.MAX_SET_RESTARTS + 1)})
    with serve(script) as url, pytest.raises(oai.OaiError, match="badResumptionToken") as e:
        run_harvest(url, tmp_path)
    assert e.value.code == "badResumptionToken"


def test_http_error_that_is_not_transient_fails_at_once(tmp_path: Path) -> None:
    script = Script(pages(), failures={"set=cs": [(404, {}, b"not here")]})
    with serve(script) as url, pytest.raises(oai.OaiError, match="HTTP 404"):
        run_harvest(url, tmp_path)
    assert len(script.requests) == 1


def test_crash_between_append_and_checkpoint_resumes_identically(
    tmp_path: Path, reference: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after page 3's records are on disk but before its state is: they are cut and fetched again."""
    write_state = oai._write_state
    calls = []

    def crash_on_third(path: Path, state: dict) -> None:
        calls.append(state)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        write_state(path, state)

    monkeypatch.setattr(oai, "_write_state", crash_on_third)
    script = Script(pages())
    with serve(script) as url:
        with pytest.raises(KeyboardInterrupt):
            run_harvest(url, tmp_path)
        saved = json.loads((tmp_path / oai.STATE_FILE).read_text())["bytes"]
        assert (tmp_path / oai.RECORDS_FILE).stat().st_size > saved  # page 3 written, not checkpointed
        with open(tmp_path / oai.RECORDS_FILE, "ab") as f:
            f.write(b'{"id": "2401.000')  # and a torn line, as a kill in the middle of a write leaves
        monkeypatch.setattr(oai, "_write_state", write_state)
        assert run_harvest(url, tmp_path).read_bytes() == reference
    steps = [q.get("set") or q["resumptionToken"] for q in script.requests]
    assert steps == ["cs", "tok|2", "tok|4", "tok|4", "math", "q-bio"]


def test_sigkilled_harvest_resumes_identically(tmp_path: Path, reference: bytes) -> None:
    """A harvest in a subprocess is SIGKILLed while waiting for page 4; the resumed one matches."""
    script = Script(pages(), hold={"set=math"})
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from test_oai import run_harvest
        run_harvest(sys.argv[1], Path(sys.argv[2]))
        """
    )
    with serve(script) as url:
        proc = subprocess.Popen([sys.executable, "-c", code, url, str(tmp_path)])
        try:
            assert script.arrived.wait(timeout=60), "harvest never reached page 4"
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert json.loads((tmp_path / oai.STATE_FILE).read_text())["pages"] == 3
        script.release.set()
        assert run_harvest(url, tmp_path).read_bytes() == reference


def test_finished_harvest_is_not_fetched_again(tmp_path: Path, reference: bytes) -> None:
    script = Script(pages())
    with serve(script) as url:
        run_harvest(url, tmp_path)
        assert len(script.requests) == 5
        assert run_harvest(url, tmp_path).read_bytes() == reference
    assert len(script.requests) == 5


def test_folder_of_another_query_is_refused(tmp_path: Path) -> None:
    with serve(Script(pages())) as url:
        run_harvest(url, tmp_path)
        with pytest.raises(oai.OaiError, match="another query"):
            oai.harvest(oai.Query(base_url=url, sets=("cs",)), tmp_path, oai.Client(delay=0), progress=False)
