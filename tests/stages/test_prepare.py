"""Stage prepare: record parsing, the report on a messy snapshot, clear failures, plain and gzip input."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pipeline_helpers import REPO, make_papers, run_stages, tiny_params, write_snapshot

from stages.prepare import (
    COLUMNS,
    PrepareError,
    PrepareParams,
    is_withdrawn,
    parse_record,
    prepare,
    strip_version,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("2401.01234v3", "2401.01234"),
        ("2401.01234", "2401.01234"),
        ("hep-th/9901001v12", "hep-th/9901001"),
        (" math/0501001v1 ", "math/0501001"),
        ("2401.0123v4x", "2401.0123v4x"),  # only a trailing version suffix is stripped
        ("2401.01234V2", "2401.01234"),  # in any case
    ],
)
def test_strip_version(raw: str, clean: str) -> None:
    assert strip_version(raw) == clean


@pytest.mark.parametrize(
    ("abstract", "withdrawn"),
    [
        ("This paper has been withdrawn by the author due to a crucial error.", True),
        ("  this article is withdrawn.", True),
        ("Withdrawn.", True),
        ("Paper withdrawn by arXiv admin", True),
        ("We study withdrawn savings in a bank run model.", False),
        ("The withdrawal of troops is modelled as a game.", False),
        ("Withdrawn populations of cells recover slowly after stress.", False),
        ("Withdrawn due to an error in the main theorem.", True),
        ("[Withdrawn]", True),
        ("The paper has been withdrawn.", True),
    ],
)
def test_is_withdrawn(abstract: str, withdrawn: bool) -> None:
    assert is_withdrawn(abstract) is withdrawn


GOOD = {
    "id": "2401.00001v2",
    "title": "  A  title\nover lines ",
    "abstract": " An abstract\n\twith   spaces that is long enough. ",
    "categories": "math.IT cs.LG math.IT",
    "update_date": "2024-01-02",
}


def test_parse_record_cleans_and_maps() -> None:
    paper, reason = parse_record(json.dumps(GOOD).encode(), min_abstract_chars=10)
    assert reason is None
    assert paper == {
        "_version": 2,
        "_capped": False,
        "_bad_date": False,
        "id": "2401.00001",
        "title": "A title over lines",
        "abstract": "An abstract with spaces that is long enough.",
        "subject": "cs.IT",
        "subjects": ["cs.IT", "cs.LG"],
        "update_date": "2024-01-02",
        "authors": [],
        "published": "",
    }


@pytest.mark.parametrize("line", [b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), "\ufeff" + json.dumps(GOOD)])
def test_a_line_that_starts_with_a_bom_is_read(line: bytes | str) -> None:
    paper, reason = parse_record(line, 10)
    assert reason is None and paper is not None and paper["id"] == "2401.00001"


def test_parse_record_keeps_authors_and_the_first_version_date() -> None:
    snapshot = {
        **GOOD,
        "authors": "ignored when authors_parsed is there",
        "authors_parsed": [["Noether", "Emmy", ""], ["Smith", "J. A.", "Jr"], ["\ud800", "", ""]],
        "versions": [
            {"version": "v2", "created": "Tue, 3 Apr 2007 10:00:00 GMT"},
            {"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42 GMT"},
            {"version": "v3", "created": "not a date"},
        ],
    }
    paper, _ = parse_record(json.dumps(snapshot), 10)
    assert paper is not None
    assert paper["authors"] == ["Emmy Noether", "J. A. Smith Jr"]
    assert paper["published"] == "2007-04-02"
    assert paper["_version"] == 3


@pytest.mark.parametrize(
    ("authors", "names"),
    [
        ("A. Author, B. Bee and C. Sea", ["A. Author", "B. Bee", "C. Sea"]),
        ("A. Author, B. Bee, and  C.\nSea", ["A. Author", "B. Bee", "C. Sea"]),
        ("Solo Writer", ["Solo Writer"]),
        ("", []),
    ],
)
def test_the_authors_string_is_split_into_names(authors: str, names: list[str]) -> None:
    paper, _ = parse_record(json.dumps({**GOOD, "authors": authors}), 10)
    assert paper is not None and paper["authors"] == names


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "malformed_json"),
        ("[1, 2]", "malformed_json"),
        (b"\xff\xfe{", "invalid_utf8"),
        (b'{"id": "2401.00001", "title": "caf\xe9"}', "invalid_utf8"),
        ("{}".encode("utf-16-le"), "utf16"),
        (json.dumps({**GOOD, "title": "x \ud800"}), "lone_surrogate"),
        (json.dumps({**GOOD, "abstract": "\u200b" * 80}), "empty_abstract"),
        (json.dumps({**GOOD, "abstract": "\x01" * 80}), "empty_abstract"),
        (json.dumps({**GOOD, "title": " \u200b\x00 "}), "empty_title"),
        (json.dumps({**GOOD, "title": "\u2066\u200f\u2069\u061c"}), "empty_title"),  # bidi isolates and marks
        (json.dumps({**GOOD, "comments": "This paper has been withdrawn by the authors"}), "withdrawn"),
        (json.dumps({**GOOD, "abstract": None}), "missing_field"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "categories"}), "missing_field"),
        (json.dumps({**GOOD, "id": "  "}), "missing_field"),
        (json.dumps({**GOOD, "abstract": " \n "}), "empty_abstract"),
        (json.dumps({**GOOD, "abstract": "This paper has been withdrawn."}), "withdrawn"),
        (json.dumps({**GOOD, "title": "Withdrawn"}), "withdrawn"),
        (json.dumps({**GOOD, "abstract": "Too short."}), "short_abstract"),
        (json.dumps({**GOOD, "categories": "bogus.XX nonsense"}), "unknown_category"),
    ],
)
def test_parse_record_reasons(line: str | bytes, reason: str) -> None:
    assert parse_record(line, min_abstract_chars=20) == (None, reason)


def test_parse_record_cleans_control_and_invisible_characters() -> None:
    line = json.dumps(
        {**GOOD, "title": "Graph\x00 neural\u200b networks\u00a0now", "abstract": "A" * 30 + "\x07 end"}
    )
    paper, _ = parse_record(line, 10)
    assert paper is not None
    assert paper["title"] == "Graph neural networks now"
    assert paper["abstract"] == "A" * 30 + " end"


def test_parse_record_caps_very_long_texts() -> None:
    paper, _ = parse_record(json.dumps({**GOOD, "abstract": "word " * 200_000}), 10, max_text_chars=1000)
    assert paper is not None and len(paper["abstract"]) <= 1000 and paper["_capped"]
    assert paper["abstract"].endswith("word")  # cut at a space


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("2024-01-02", "2024-01-02"),
        ("1/9/2008", "2008-01-09"),
        ("12/31/2019", "2019-12-31"),
        ("2024-01-02T10:00:00Z", "2024-01-02"),
    ],
)
def test_update_date_is_iso(raw: str, iso: str) -> None:
    paper, _ = parse_record(json.dumps({**GOOD, "update_date": raw}), 10)
    assert paper is not None and paper["update_date"] == iso and not paper["_bad_date"]


@pytest.mark.parametrize("raw", ["yesterday", "2024-13-45", "31/12/2019"])
def test_an_unparsable_update_date_is_dropped_and_counted(raw: str) -> None:
    paper, _ = parse_record(json.dumps({**GOOD, "update_date": raw}), 10)
    assert paper is not None and paper["update_date"] == "" and paper["_bad_date"]


def test_parse_record_without_update_date() -> None:
    paper, _ = parse_record(json.dumps({k: v for k, v in GOOD.items() if k != "update_date"}), 10)
    assert paper is not None and paper["update_date"] == ""


def messy_snapshot() -> tuple[list[dict | str], dict[str, int]]:
    """60 good papers (6 subjects) plus every kind of bad line, and the report prepare must give."""
    papers: list[dict | str] = list(make_papers(per_subject=10))
    first, second = copy.deepcopy(papers[0]), copy.deepcopy(papers[1])
    assert isinstance(first, dict) and isinstance(second, dict)
    bad: list[dict | str] = [
        "{malformed json",
        '{"id": "2401.99999", "title": ',
        {**first, "id": first["id"].split("v")[0] + "v9", "title": "A later version"},
        {**second, "id": second["id"].split("v")[0]},
        {**first, "id": "2402.00001", "abstract": ""},
        {k: v for k, v in first.items() if k != "abstract"} | {"id": "2402.00002"},
        {**first, "id": "2402.00003", "categories": "bogus.XX"},
        {**first, "id": "2402.00004", "categories": "nonsense"},
        {**first, "id": "2402.00005", "categories": "cs.lg"},
        {**first, "id": "2402.00006", "abstract": "This paper has been withdrawn by the author."},
        {**first, "id": "2402.00007", "abstract": "Withdrawn due to an error in equation 3."},
        {**first, "id": "2402.00008", "abstract": "Too short."},
        {**first, "id": "2402.00009", "categories": "hep-ex"},
        {**first, "id": "2402.00010", "categories": "hep-ex cs.LG"},
        "",
        "   ",
        "",
    ]
    report = {
        "rows_read": 60 + 14,  # blank lines are not rows
        "rows_kept": 60,
        "subjects": 6,
        "dropped_malformed_json": 2,
        "dropped_duplicate_id": 2,
        "dropped_empty_abstract": 1,
        "dropped_missing_field": 1,
        "dropped_unknown_category": 3,
        "dropped_withdrawn": 2,
        "dropped_short_abstract": 1,
        "dropped_rare_subject": 2,
    }
    records = papers[:30] + bad[:8] + papers[30:] + bad[8:]
    return records, report


PARAMS = PrepareParams(
    source=None,  # type: ignore[arg-type]  # prepare() reads lines, not the source
    min_abstract_chars=20,
    min_papers_per_subject=5,
    max_papers_per_subject=None,
    max_text_chars=10_000,
    max_unusable_fraction=0.2,  # the messy snapshot has 7 unusable lines of 74
)


def lines_of(records: list[dict | str]) -> list[bytes]:
    return [(r if isinstance(r, str) else json.dumps(r)).encode() for r in records]


def test_prepare_counts_every_reason() -> None:
    records, expected = messy_snapshot()
    df, report = prepare(lines_of(records), PARAMS, seed=0)
    examples = report.pop("examples")
    assert report == expected
    assert set(examples) == {k.removeprefix("dropped_") for k in expected if k.startswith("dropped_")} - {
        "rare_subject"
    }
    assert examples["malformed_json"] == ["line 31", "line 32"]  # 1-based line numbers, blank lines counted
    assert examples["duplicate_id"][0].startswith("line 33 (")  # with the id
    assert list(df.columns) == COLUMNS
    assert df["id"].is_unique and df["id"].is_monotonic_increasing
    assert not df["id"].str.contains("v").any()
    first = records[0]
    assert isinstance(first, dict)
    kept = df.set_index("id").loc[first["id"].split("v")[0]]
    assert kept["title"] == "A later version"  # of two records of one id, the newest version (v9) is kept
    second = records[1]
    assert isinstance(second, dict)
    assert (
        df.set_index("id").loc[second["id"].split("v")[0], "title"] == second["title"]
    )  # v1.. beats no suffix
    assert set(df["subject"]) == {"cs.LG", "math.AP", "hep-th", "astro-ph.GA", "q-bio.NC", "econ.GN"}
    assert all(s == subjects[0] for s, subjects in zip(df["subject"], df["subjects"], strict=True))


def test_prepare_caps_each_subject() -> None:
    records, _ = messy_snapshot()
    capped = dataclasses.replace(PARAMS, max_papers_per_subject=4)
    df, report = prepare(lines_of(records), capped, seed=0)
    assert df["subject"].value_counts().to_dict() == dict.fromkeys(set(df["subject"]), 4)
    assert report["dropped_subject_cap"] == 60 - 24 and report["rows_kept"] == 24
    again, _ = prepare(lines_of(records), capped, seed=0)
    pd.testing.assert_frame_equal(df, again)


def write_project(root: Path, snapshot: Path, max_unusable_fraction: float = 0.05) -> Path:
    params = tiny_params(snapshot)
    params["prepare"]["max_unusable_fraction"] = max_unusable_fraction
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def run_prepare(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / "prepare.py")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "prepare: no valid arXiv paper among 0 lines (no lines)"),
        (
            b"id,title,abstract\n1,a,b\n",
            "prepare: 2 of 2 lines (100.0%) are unusable, more than prepare.max_unusable",
        ),
        (None, "prepare: input not found: "),
    ],
    ids=["empty", "csv", "missing"],
)
def test_main_fails_with_a_one_line_reason(tmp_path: Path, content: bytes | None, reason: str) -> None:
    snapshot = tmp_path / "input.jsonl"
    if content is not None:
        snapshot.write_bytes(content)
    result = run_prepare(write_project(tmp_path, snapshot))
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]  # earlier stderr is the progress bar
    assert last.startswith(reason), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_plain_and_gzip_input_give_the_same_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records, expected = messy_snapshot()
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(b"\n".join(lines_of(records)) + b"\n")
    gz = write_snapshot(tmp_path / "snap.jsonl.gz", records)
    tables = []
    for i, snapshot in enumerate([plain, gz]):
        root = tmp_path / f"p{i}"
        root.mkdir()
        monkeypatch.chdir(write_project(root, snapshot, max_unusable_fraction=0.2))
        run_stages("prepare")
        report = json.loads((root / "metrics" / "prepare.json").read_text())
        report.pop("prepare_examples")
        assert report == {f"prepare_{k}": v for k, v in expected.items()}
        tables.append(pd.read_parquet(root / "data" / "prepared" / "papers.parquet"))
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_main_smoke(tiny_project: Path) -> None:
    run_stages("prepare")
    df = pd.read_parquet(tiny_project / "data" / "prepared" / "papers.parquet")
    assert list(df.columns) == COLUMNS
    assert len(df) == 6 * 24 and df["subject"].nunique() == 6
    metrics = json.loads((tiny_project / "metrics" / "prepare.json").read_text())
    assert metrics["prepare_rows_kept"] == len(df)
    assert metrics.pop("prepare_examples") == {}  # no line dropped
    assert all(k.startswith("prepare_") and math.isfinite(v) for k, v in metrics.items())
    written = sorted(p.name for p in tiny_project.iterdir())
    assert written == ["arxiv.jsonl.gz", "data", "metrics", "params.yaml"]


def test_the_drop_rate_guard_names_the_main_reason() -> None:
    records, _ = messy_snapshot()
    strict = dataclasses.replace(PARAMS, max_unusable_fraction=0.05)
    with pytest.raises(PrepareError, match=r"7 of 74 lines \(9\.5%\) are unusable.*mostly unknown_category"):
        prepare(lines_of(records), strict, seed=0)


def test_a_utf16_file_fails_saying_so(tmp_path: Path) -> None:
    text = "\n".join(json.dumps(p) for p in make_papers(per_subject=500)) + "\n"
    lines = (text.encode("utf-16")).split(b"\n")  # read as UTF-8 lines, as the sources do
    loose = dataclasses.replace(PARAMS, min_papers_per_subject=1)
    with pytest.raises(PrepareError, match="this looks like UTF-16"):
        prepare(lines, loose, seed=0)


def test_a_single_subject_fails_at_prepare() -> None:
    one = [p for p in make_papers(per_subject=10) if p["categories"].startswith("hep-th")]
    with pytest.raises(PrepareError, match=r"only one subject is left \(hep-th, 10 papers\)"):
        prepare(lines_of(one), PARAMS, seed=0)


def test_surrogates_and_bad_bytes_are_counted_not_fatal() -> None:
    papers = make_papers(per_subject=10)
    bad = [json.dumps({**papers[0], "id": "2405.00001", "title": "x \ud800"}).encode(), b'{"id": "\xff"}']
    df, report = prepare([*lines_of(papers), *bad], PARAMS, seed=0)
    assert report["dropped_lone_surrogate"] == 1 and report["dropped_invalid_utf8"] == 1
    assert report["examples"]["lone_surrogate"] == ["line 61"]
    df.to_parquet(io.BytesIO())  # what once failed: every kept text encodes as UTF-8
