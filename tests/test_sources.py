"""Sources of raw metadata: local and remote snapshots (http, gs), OAI-PMH harvests, Hugging Face datasets."""

from __future__ import annotations

import datetime
import functools
import gzip
import json
import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from oai_server import Script, page, record, serve

from arxiv_embed import sources
from arxiv_embed.params import ParamsError, load_section
from arxiv_embed.sources import HfSourceParams, OaiSourceParams, SourceParams, iter_source_lines

if TYPE_CHECKING:
    from gcs_fixtures import GcsEmulator

pytest_plugins = ["gcs_fixtures"]

PAPERS = [
    {"id": "2401.00001", "title": "Héllo", "abstract": "First abstract.", "categories": "cs.LG"},
    {"id": "2401.00002", "title": "World", "abstract": "Second\nabstract.", "categories": "math.AG cs.LG"},
]
LINES = [json.dumps(p, ensure_ascii=False).encode() for p in PAPERS]


@pytest.fixture
def snapshot_gz(tmp_path: Path) -> Path:
    path = tmp_path / "snapshot.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(LINES) + b"\n"))
    return path


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A static file server on loopback: (folder it serves, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def file_source(uri: str) -> SourceParams:
    return SourceParams(kind="file", uri=uri)


# --- snapshots by path or URL -------------------------------------------------------------------------------


def test_local_file_plain_and_gzip(tmp_path: Path, snapshot_gz: Path) -> None:
    plain = tmp_path / "snapshot.jsonl"
    plain.write_bytes(b"\n".join(LINES) + b"\n")
    assert list(iter_source_lines(file_source(str(plain)), tmp_path)) == LINES
    assert list(iter_source_lines(file_source(str(snapshot_gz)), tmp_path)) == LINES


def test_missing_local_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"input not found: .*nope\.jsonl.*prepare\.source\.kind=oai"):
        iter_source_lines(file_source(str(tmp_path / "nope.jsonl")), tmp_path)
    with pytest.raises(ParamsError, match=r"prepare\.source\.uri = '': give a snapshot path or URL"):
        file_source("")


def test_remote_snapshot_over_http(tmp_path: Path, snapshot_gz: Path, http_root: tuple[Path, str]) -> None:
    root, base = http_root
    (root / "arxiv.jsonl.gz").write_bytes(snapshot_gz.read_bytes())
    assert list(iter_source_lines(file_source(f"{base}/arxiv.jsonl.gz"), tmp_path)) == LINES
    with pytest.raises(FileNotFoundError, match="input not found"):
        list(iter_source_lines(file_source(f"{base}/missing.jsonl.gz"), tmp_path))


def test_remote_snapshot_larger_than_a_block_without_range_support(
    tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    """http.server ignores Range headers; a file past fsspec's 5 MiB read block still streams whole."""
    root, base = http_root
    lines = [json.dumps({"id": str(i), "abstract": os.urandom(300).hex()}).encode() for i in range(18_000)]
    data = b"\n".join(lines) + b"\n"
    (root / "big.jsonl").write_bytes(data)
    (root / "big.jsonl.gz").write_bytes(gzip.compress(data, compresslevel=1))
    assert (root / "big.jsonl.gz").stat().st_size > 5 << 20  # fsspec reads http in 5 MiB blocks
    assert list(iter_source_lines(file_source(f"{base}/big.jsonl"), tmp_path)) == lines
    assert list(iter_source_lines(file_source(f"{base}/big.jsonl.gz"), tmp_path)) == lines


def test_remote_snapshot_on_gcs(tmp_path: Path, snapshot_gz: Path, gcs_emulator: GcsEmulator) -> None:
    gcs_emulator.filesystem().pipe(f"{gcs_emulator.bucket}/raw/arxiv.jsonl.gz", snapshot_gz.read_bytes())
    uri = gcs_emulator.url("raw/arxiv.jsonl.gz")
    assert list(iter_source_lines(file_source(uri), tmp_path)) == LINES
    with pytest.raises(FileNotFoundError, match="input not found"):
        list(iter_source_lines(file_source(gcs_emulator.url("raw/missing.jsonl")), tmp_path))


# --- OAI-PMH ------------------------------------------------------------------------------------------------


def oai_pages() -> dict[str, bytes]:
    return {
        "set=cs": page([record("2401.00001", "First", "cs.LG")], "t1"),
        "token=t1": page([record("2401.00002", "Second", "cs.CL")], None),
        "set=math": page([record("2401.00003", "Third", "math.AG", set_spec="math")], None),
    }


def test_oai_source_harvests_once_per_query(tmp_path: Path) -> None:
    script = Script(oai_pages())
    with serve(script) as url:
        cs = SourceParams(kind="oai", oai=OaiSourceParams(sets=["cs"], base_url=url, delay=0))
        lines = list(iter_source_lines(cs, tmp_path, progress=False))
        assert [json.loads(line)["id"] for line in lines] == ["2401.00001", "2401.00002"]
        assert list(iter_source_lines(cs, tmp_path, progress=False)) == lines
        assert len(script.requests) == 2  # the finished harvest is read again, not fetched again
        both = SourceParams(kind="oai", oai=OaiSourceParams(sets=["cs", "math"], base_url=url, delay=0))
        ids = [json.loads(line)["id"] for line in iter_source_lines(both, tmp_path, progress=False)]
    assert ids == ["2401.00001", "2401.00002", "2401.00003"]
    assert len(script.requests) == 5
    assert sources.harvest_dir(cs.oai, tmp_path) != sources.harvest_dir(both.oai, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [sources.harvest_dir(cs.oai, tmp_path).name, sources.harvest_dir(both.oai, tmp_path).name]
    )


def test_oai_lines_are_papers_for_prepare(tmp_path: Path) -> None:
    from stages.prepare import parse_record

    with serve(Script(oai_pages())) as url:
        cfg = SourceParams(kind="oai", oai=OaiSourceParams(sets=["cs", "math"], base_url=url, delay=0))
        parsed = [parse_record(line, 10) for line in iter_source_lines(cfg, tmp_path, progress=False)]
    assert [reason for _, reason in parsed] == [None, None, None]
    # prepare's private bookkeeping (version, date and cap flags) aside, the record as prepare keeps it.
    assert {k: v for k, v in parsed[2][0].items() if not k.startswith("_")} == {
        "id": "2401.00003",
        "title": "Third",
        "abstract": "Abstract of 2401.00003, on two lines.",
        "subject": "math.AG",
        "subjects": ["math.AG"],
        "update_date": "2024-01-10",
        "authors": ["Ada Lovelace"],  # from the OAI record's <authors>
        "published": "",  # the arXiv OAI format has no versions
    }


# --- Hugging Face datasets ----------------------------------------------------------------------------------


def test_hf_row_to_snapshot() -> None:
    row = {
        "id": "2401.00001",
        "title": "T",
        "summary": "A.",
        "categories": ["cs.LG", "stat.ML"],
        "update_date": datetime.datetime(2024, 1, 5, 10, 30),
        "extra": 1,
    }
    assert sources.hf_row_to_snapshot(row, {"summary": "abstract"}) == {
        "id": "2401.00001",
        "submitter": None,
        "authors": None,
        "title": "T",
        "comments": None,
        "journal-ref": None,
        "doi": None,
        "report-no": None,
        "categories": "cs.LG stat.ML",
        "license": None,
        "abstract": "A.",
        "update_date": "2024-01-05",
        "authors_parsed": None,
        "versions": None,
    }


@pytest.mark.slow  # imports datasets (and torch)
def test_hf_dataset_streamed_from_a_local_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "arxiv-hf"
    folder.mkdir()
    rows = [
        {**p, "categories": p["categories"].split(), "update_date": "2024-01-0" + str(i + 1)}
        for i, p in enumerate(PAPERS)
    ]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = SourceParams(kind="hf", hf=HfSourceParams(dataset=str(folder), split="train"))
    got = [json.loads(line) for line in iter_source_lines(cfg, tmp_path)]
    assert [(r["id"], r["categories"], r["update_date"]) for r in got] == [
        ("2401.00001", "cs.LG", "2024-01-01"),
        ("2401.00002", "math.AG cs.LG", "2024-01-02"),
    ]
    assert [r["abstract"] for r in got] == [p["abstract"] for p in PAPERS]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.arrow"))  # streamed
    with pytest.raises(ParamsError, match=r"prepare\.source\.hf\.dataset = '': give a hub id"):
        SourceParams(kind="hf")


# --- params -------------------------------------------------------------------------------------------------


def test_source_params_from_yaml_mapping() -> None:
    params = {
        "prepare": {
            "source": {
                "kind": "oai",
                "uri": "",
                "oai": {
                    "sets": ["cs", "physics:hep-th"],
                    "from_date": "2024-01-01",
                    "until_date": None,
                    "base_url": "http://h/oai",
                    "delay": 3,
                },
                "hf": {"dataset": "", "config": None, "split": "train", "columns": {}},
            }
        }
    }
    cfg = load_section(SourceParams, "source", params["prepare"])
    assert cfg.kind == "oai"
    assert cfg.oai == OaiSourceParams(["cs", "physics:hep-th"], "2024-01-01", None, "http://h/oai", 3)
    params["prepare"]["source"]["oai"]["until_date"] = datetime.date(2024, 3, 31)  # unquoted in YAML
    cfg = load_section(SourceParams, "source", params["prepare"])
    assert sources.harvest_dir(cfg.oai, "w") == sources.harvest_dir(
        OaiSourceParams(["cs", "physics:hep-th"], "2024-01-01", "2024-03-31", "http://h/oai", 3), "w"
    )
    params["prepare"]["source"]["oai"]["set"] = "cs"
    with pytest.raises(ParamsError, match=r"unknown key 'source.oai.set'"):
        load_section(SourceParams, "source", params["prepare"])
    params["prepare"]["source"]["kind"] = "ftp"
    with pytest.raises(ParamsError, match="must be one of"):
        load_section(SourceParams, "source", params["prepare"])
