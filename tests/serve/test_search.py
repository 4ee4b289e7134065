"""Search with filters, by text and by paper, against a brute-force numpy search over a fixture index of random
unit vectors with random metadata; ``/papers/{id}`` and ``/subjects``; what approximate indexes do with filters."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import faiss
import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from serve_helpers import changed

from arxiv_embed.onnx import OnnxEncoder
from serve.app import create_app
from serve.resources import PaperIndex, load_index, meta_table
from serve.schemas import SearchFilters, SearchResponse
from serve.search import filter_mask, search_rows, snippet
from serve.settings import Settings

pytest_plugins = ["onnx_fixtures"]

N = 600
DIM = 384  # the served model's: text queries are embedded by it
SUBJECTS = ["astro-ph.GA", "cs.LG", "hep-th", "math.AP", "math.NT", "stat.ML"]
RARE = "q-bio.NC"  # the primary subject of 3 papers only
WORDS = ["graph", "neural", "network", "galaxy", "halo", "prime", "field", "operator", "spectral", "entropy"]
TEXTS = ["graph neural networks", "dark matter halos", "prime numbers in progressions", "elliptic operators"]


def unit_vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_papers(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        primary = RARE if i in (5, 77, 300) else rng.choice(SUBJECTS)
        others = rng.sample([s for s in SUBJECTS if s != primary], rng.choice([0, 0, 1, 2]))
        published = "" if rng.random() < 0.1 else f"{rng.randint(1995, 2024)}-{rng.randint(1, 12):02d}-15"
        updated = "" if rng.random() < 0.1 else f"{rng.randint(2005, 2025)}-{rng.randint(1, 12):02d}-01"
        rows.append(
            {
                "id": f"hep-th/99{i:05d}" if i % 7 == 0 else f"2{i % 4}01.{i:05d}",
                "title": f"Paper {i} on {rng.choice(WORDS)}",
                "subject": primary,
                "subjects": [primary, *others],
                "authors": [f"Author {rng.randint(1, 50)}" for _ in range(rng.randint(0, 3))],
                "published": published,
                "update_date": updated,
                "abstract": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 80))),
            }
        )
    return pd.DataFrame(rows)


PAPERS = random_papers(N, seed=0)
VECTORS = unit_vectors(N, seed=0)
RECORDS = PAPERS.to_dict("records")


# --- brute force -------------------------------------------------------------------------------------------


def passes(paper: dict, filters: dict) -> bool:
    """The filter semantics of docs/api.md, one paper at a time."""
    match = filters.get("match", "primary")
    mine = {paper["subject"]} if match == "primary" else {paper["subject"], *paper["subjects"]}
    if filters.get("subjects") and not mine & set(filters["subjects"]):
        return False
    if mine & set(filters.get("exclude_subjects", [])):
        return False
    day = paper["published"] or paper["update_date"]
    if "date_from" in filters and not (day and day >= filters["date_from"]):
        return False
    if "date_to" in filters and not (day and day <= filters["date_to"]):
        return False
    return paper["id"] not in filters.get("exclude_ids", [])


def matching(filters: dict, skip: int | None = None) -> list[int]:
    return [i for i, paper in enumerate(RECORDS) if passes(paper, filters) and i != skip]


def brute_force(
    query: np.ndarray, k: int, filters: dict, skip: int | None = None, vectors: np.ndarray = VECTORS
) -> tuple[list[str], list[float]]:
    keep = matching(filters, skip)
    scores = vectors[keep].astype(np.float64) @ query.astype(np.float64)
    order = np.argsort(-scores, kind="stable")[:k]
    top = scores[order]
    # The fixture must have no near-ties in what it compares, or the two searches could rightly differ.
    if len(scores) > len(order):
        top = np.append(top, np.sort(scores)[::-1][len(order)])
    assert np.all(np.diff(-top) > 2e-6), "near-tie in the fixture: change its seed"
    return [PAPERS.id[keep[i]] for i in order], [float(s) for s in scores[order]]


def random_filters(rng: random.Random) -> dict:
    filters: dict = {}
    if rng.random() < 0.6:
        filters["subjects"] = rng.sample([*SUBJECTS, RARE], rng.randint(1, 3))
    if rng.random() < 0.4:
        filters["exclude_subjects"] = rng.sample(SUBJECTS, rng.randint(1, 2))
    if rng.random() < 0.5:
        filters["match"] = rng.choice(["primary", "any"])
    if rng.random() < 0.5:
        filters["date_from"] = f"{rng.randint(1995, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if rng.random() < 0.5:
        filters["date_to"] = f"{rng.randint(2021, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if rng.random() < 0.4:
        filters["exclude_ids"] = [*rng.sample(list(PAPERS.id), rng.randint(1, 40)), "not-an-id"]
    return filters


# --- the app on the fixture index --------------------------------------------------------------------------


def write_index(folder: Path, index: faiss.Index) -> Path:
    index.add(VECTORS)
    faiss.write_index(index, str(folder / "index.faiss"))
    PAPERS.to_parquet(folder / "meta.parquet")
    return folder


@pytest.fixture(scope="module")
def flat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_index(tmp_path_factory.mktemp("flat"), faiss.IndexFlatIP(DIM))


@pytest.fixture(scope="module")
def client(settings: Settings, flat_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(changed(settings, index_dir=flat_dir))) as test_client:
        yield test_client


def search(client: TestClient, body: dict) -> dict:
    response = client.post("/search", json=body)
    assert response.status_code == 200, response.text
    SearchResponse.model_validate(response.json())
    return response.json()


def assert_error(response: httpx.Response, status: int, error_type: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type
    for word in words:
        assert word in body["error"]


def test_filtered_text_search_is_the_brute_force_top_k(client: TestClient, encoder: OnnxEncoder) -> None:
    rng = random.Random(1)
    queries = encoder.encode(TEXTS, normalize=True)
    for trial in range(60):
        t = trial % len(TEXTS)
        k, filters = rng.choice([1, 5, 10, 37]), random_filters(rng)
        body = search(client, {"text": TEXTS[t], "k": k, "filters": filters})
        ids, scores = brute_force(queries[t], k, filters)
        assert [r["id"] for r in body["results"]] == ids, filters
        np.testing.assert_allclose([r["score"] for r in body["results"]], scores, atol=1e-5)
        assert body["matched"] == len(matching(filters))
        assert body["exact"] is True
        assert all(passes(r, filters) for r in body["results"])


def test_search_by_paper_uses_its_stored_vector_and_leaves_it_out(client: TestClient) -> None:
    rng = random.Random(2)
    for trial in range(40):
        row = rng.randrange(N)
        k, filters = rng.choice([3, 10]), random_filters(rng) if trial % 4 else {}
        body = search(client, {"paper_id": PAPERS.id[row], "k": k, "filters": filters})
        assert body["query"] == {"text": None, "paper_id": PAPERS.id[row]}
        ids, scores = brute_force(VECTORS[row], k, filters, skip=row)
        assert [r["id"] for r in body["results"]] == ids, filters
        np.testing.assert_allclose([r["score"] for r in body["results"]], scores, atol=1e-5)
    itself = search(client, {"paper_id": PAPERS.id[8], "k": 3, "include_self": True})["results"]
    assert itself[0]["id"] == PAPERS.id[8] and itself[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert [r["id"] for r in itself[1:]] == brute_force(VECTORS[8], 2, {}, skip=8)[0]


def test_fewer_than_k_only_when_fewer_match(client: TestClient) -> None:
    body = search(client, {"paper_id": PAPERS.id[0], "k": 10, "filters": {"subjects": [RARE]}})
    assert sorted(r["id"] for r in body["results"]) == sorted(PAPERS.id[[5, 77, 300]])
    assert body["matched"] == 3
    body = search(client, {"paper_id": PAPERS.id[5], "k": 10, "filters": {"subjects": [RARE]}})
    assert len(body["results"]) == body["matched"] == 2  # the query paper is left out
    # A real arXiv subject that no paper here has matches nothing; so does an empty date range.
    assert search(client, {"text": "a", "filters": {"subjects": ["econ.EM"]}})["results"] == []
    empty = search(client, {"text": "a", "filters": {"date_from": "2030-01-01", "date_to": "2030-01-01"}})
    assert empty["results"] == [] and empty["matched"] == 0
    everything = search(client, {"text": "a", "k": 100})
    assert len(everything["results"]) == 100 and everything["matched"] == N


def test_subject_aliases_and_records(client: TestClient) -> None:
    # cs.NA is arXiv's alias of math.NA: no paper here; stat.TH -> math.ST likewise.
    assert search(client, {"text": "a", "filters": {"subjects": ["cs.NA", "stat.TH"]}})["matched"] == 0
    top = search(client, {"paper_id": PAPERS.id[14], "k": 1, "include_self": True})["results"][0]
    expected = PAPERS.iloc[14].to_dict()
    assert {key: top[key] for key in expected} == {
        **expected,
        "subjects": list(expected["subjects"]),
        "authors": list(expected["authors"]),
    }
    assert top["url"] == f"https://arxiv.org/abs/{PAPERS.id[14]}"
    assert top["pdf_url"] == f"https://arxiv.org/pdf/{PAPERS.id[14]}"
    assert top["snippet"] == snippet(expected["abstract"])


def test_papers_endpoint_returns_the_record(client: TestClient) -> None:
    old_style = PAPERS.id[7]
    assert "/" in old_style
    record = client.get(f"/papers/{old_style}").json()
    assert record["id"] == old_style and record["title"] == PAPERS.title[7]
    assert record["url"] == f"https://arxiv.org/abs/{old_style}"
    assert record["abstract"] == PAPERS.abstract[7]
    assert_error(client.get("/papers/2199.99999"), 404, "paper_not_found", "2199.99999")
    assert_error(client.get("/papers/hep-th/0000000"), 404, "paper_not_found")


def test_subjects_lists_counts(client: TestClient) -> None:
    body = client.get("/subjects").json()
    assert body["papers"] == N
    assert [s["subject"] for s in body["subjects"]] == sorted([*SUBJECTS, RARE])
    for entry in body["subjects"]:
        assert entry["primary"] == int((PAPERS.subject == entry["subject"]).sum())
        assert entry["any"] == sum(entry["subject"] in s for s in PAPERS.subjects)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"text": "a", "paper_id": PAPERS.id[0]}, ["exactly one of text or paper_id"]),
        ({"k": 3}, ["exactly one of text or paper_id"]),
        ({"text": None, "paper_id": PAPERS.id[0]}, ["text"]),
        ({"text": "a", "filters": {"date_from": "2021-1-1"}}, ["date_from", "YYYY-MM-DD"]),
        ({"text": "a", "filters": {"date_to": "2021-02-30"}}, ["date_to", "day is out of range"]),
        ({"text": "a", "filters": {"date_to": 1609459200}}, ["date_to"]),
        ({"text": "a", "filters": {"date_from": "2021-03-01", "date_to": "2021-01-01"}}, ["after date_to"]),
        (
            {"text": "a", "filters": {"subjects": ["math.Ap"]}},
            ["'math.Ap' is not an arXiv subject", "math.AP"],
        ),
        ({"text": "a", "filters": {"exclude_subjects": ["physics"]}}, ["exclude_subjects"]),
        ({"text": "a", "filters": {"match": "all"}}, ["match"]),
        ({"text": "a", "filters": {"subject": ["cs.LG"]}}, ["filters.subject"]),
        ({"paper_id": PAPERS.id[0], "include_self": "yes"}, ["include_self"]),
    ],
)
def test_invalid_searches_are_422_with_a_reason(client: TestClient, body: dict, words: list[str]) -> None:
    assert_error(client.post("/search", json=body), 422, "invalid_request", *words)


def test_unknown_paper_is_404(client: TestClient) -> None:
    assert_error(client.post("/search", json={"paper_id": "1234.5678"}), 404, "paper_not_found", "1234.5678")


def test_index_that_cannot_give_back_vectors_is_501_by_paper(
    settings: Settings, tmp_path: Path, encoder: OnnxEncoder
) -> None:
    index = faiss.IndexIDMap(faiss.IndexFlatIP(DIM))  # no reconstruct
    index.add_with_ids(VECTORS, np.arange(N))
    faiss.write_index(index, str(tmp_path / "index.faiss"))
    PAPERS.to_parquet(tmp_path / "meta.parquet")
    with TestClient(create_app(changed(settings, index_dir=tmp_path))) as client:
        assert_error(
            client.post("/search", json={"paper_id": PAPERS.id[0]}),
            501,
            "paper_vectors_unavailable",
            "IndexIDMap",
            "reconstruct not implemented",
        )
        # Text searches still work, filters through the IDSelector (the ids are the rows).
        filters = {"subjects": ["cs.LG", "math.AP"], "match": "any"}
        body = search(client, {"text": TEXTS[0], "k": 10, "filters": filters})
        query = encoder.encode([TEXTS[0]], normalize=True)[0]
        assert [r["id"] for r in body["results"]] == brute_force(query, 10, filters)[0]


# --- approximate indexes (the search function, without the app) -------------------------------------------


def fixture_index(kind: str, tmp_path: Path, nprobe: int = 16) -> PaperIndex:
    if kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, 16, faiss.METRIC_INNER_PRODUCT)
        index.train(VECTORS)
        index.nprobe = nprobe  # 16: every list
    elif kind == "ivf_pq_sq8":  # faiss_build's: fast-scan PQ candidates re-ranked with SQ8 codes
        index = faiss.index_factory(DIM, "IVF16,PQ48x4fs,Refine(SQ8)", faiss.METRIC_INNER_PRODUCT)
        index.train(VECTORS)
        faiss.extract_index_ivf(index).nprobe = nprobe
        index.k_factor = 10
    else:
        index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
    return load_index(write_index(tmp_path, index), DIM)  # from disk: an IVF index has no direct map


@pytest.mark.parametrize("kind", ["ivf", "ivf_pq_sq8", "hnsw"])
def test_small_filtered_subsets_are_exact_on_approximate_indexes(kind: str, tmp_path: Path) -> None:
    papers = fixture_index(kind, tmp_path, nprobe=1)  # IVF: one list of 16 probed
    assert papers.vectors_absent is None
    # Exact over the vectors the index holds: SQ8 codes decoded for ivf_pq_sq8, the vectors themselves otherwise.
    stored = papers.index.reconstruct_n(0, N) if kind == "ivf_pq_sq8" else VECTORS
    rng = random.Random(3)
    missed = 0
    for _ in range(30):
        filters, row = random_filters(rng), rng.randrange(N)
        mask = filter_mask(papers, SearchFilters(**filters), [row])
        truth = brute_force(stored[row], 10, filters, skip=row, vectors=stored)[0]
        found = search_rows(papers, papers.vector(row), 10, mask)  # matched <= EXACT_SUBSET_MAX
        assert found.exact
        assert list(PAPERS.id[found.rows]) == truth
        approximate = search_rows(papers, papers.vector(row), 10, mask, exact_max=0)
        missed += list(PAPERS.id[approximate.rows]) != truth
    if kind.startswith("ivf"):
        assert missed > 20, missed  # what the exact path is for: the filtered nprobe=1 search misses most


def test_filtered_ivf_search_keeps_its_nprobe(tmp_path: Path) -> None:
    papers = fixture_index("ivf", tmp_path)
    mask = np.asarray(PAPERS.subject == "cs.LG")
    for row in range(0, N, 50):
        found = search_rows(papers, VECTORS[row], 10, mask, exact_max=0)  # through the IDSelector
        assert not found.exact
        # nprobe = nlist: exact; with SearchParametersIVF's default nprobe of 1 it would miss most.
        assert list(PAPERS.id[found.rows]) == brute_force(VECTORS[row], 10, {"subjects": ["cs.LG"]})[0]


@pytest.mark.parametrize("kind", ["hnsw", "ivf_pq_sq8"])
def test_filtered_approximate_search_returns_only_kept_papers_with_high_recall(
    kind: str, tmp_path: Path
) -> None:
    papers = fixture_index(kind, tmp_path)  # ivf_pq_sq8: every list probed, through the refine's base
    mask = np.asarray(PAPERS.subject.isin(["cs.LG", "hep-th"]))
    hits = []
    for row in range(0, N, 20):
        found = search_rows(papers, VECTORS[row], 10, mask, exact_max=0)
        assert mask[found.rows].all()
        truth = brute_force(VECTORS[row], 10, {"subjects": ["cs.LG", "hep-th"]})[0]
        hits.append(len(set(PAPERS.id[found.rows]) & set(truth)) / 10)
    assert np.mean(hits) >= 0.9


def test_older_meta_gets_empty_columns() -> None:
    old = pd.DataFrame({"id": ["a", "b"], "title": ["A", None], "subject": ["cs.LG", "hep-th"]})
    table = meta_table(pa.Table.from_pandas(old))
    assert table.to_pylist()[1] == {
        "id": "b",
        "title": "",
        "subject": "hep-th",
        "subjects": ["hep-th"],
        "authors": [],
        "published": "",
        "update_date": "",
        "abstract": "",
    }


def test_snippet_cuts_at_a_word() -> None:
    assert snippet("short") == "short"
    assert snippet("alpha beta gamma delta", chars=12) == "alpha beta..."
    assert snippet("x" * 20, chars=10) == "x" * 10 + "..."
