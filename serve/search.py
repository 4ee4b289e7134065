"""Paper search: by text or by an indexed paper's stored vector, with exact filters; ``/papers/{id}``, ``/subjects``.

Filters become a boolean mask over the index's rows (subjects, dates, excluded ids), and FAISS searches only the
rows it keeps (``IDSelectorBitmap`` through ``SearchParameters``). On the flat index that is exactly the best k of
the kept papers. An approximate index filters while it searches (IVF: the probed lists, HNSW: the graph walk), which
can miss neighbours or return fewer than k; when the filter keeps at most ``EXACT_SUBSET_MAX`` papers, an IVF index
scans all its lists for them, and an HNSW or a re-ranked IVF-PQ (``ivf_pq_sq8``) index has their stored vectors
scored one by one, so small subsets are exact there too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import faiss
import numpy as np
from fastapi import APIRouter

from arxiv_embed.pooling import l2_normalize
from arxiv_embed.text import cap_text
from serve.errors import ApiError
from serve.resources import PaperIndex
from serve.schemas import (
    PaperRecord,
    SearchFilters,
    SearchRequest,
    SearchResponse,
    SubjectsResponse,
    error_responses,
)
from serve.settings import Settings

EXACT_SUBSET_MAX = 20_000  # filtered searches keeping at most this many papers score them all (exact)
SNIPPET_CHARS = 300


class SearchRuntime(Protocol):
    """What the search endpoints need of the app's runtime."""

    settings: Settings
    index: PaperIndex | None
    index_absent: str | None


Embed = Callable[[Any, list[str]], Awaitable[tuple[np.ndarray, list[int]]]]


@dataclass(frozen=True)
class Found:
    rows: np.ndarray
    scores: np.ndarray
    matched: int  # rows that pass the filters
    exact: bool  # rows are exactly the best of the matched rows


# --- filters -------------------------------------------------------------------------------------------------


def subject_codes(papers: PaperIndex, subjects: list[str]) -> np.ndarray:
    """The index's codes of these (canonical, as the schema made them) subjects; one that no paper of the index
    has is left out, so it matches nothing."""
    at = np.searchsorted(papers.subjects, subjects).clip(max=len(papers.subjects) - 1)
    return at[np.asarray(papers.subjects)[at] == np.asarray(subjects)].astype(np.int32)


def _with_subjects(papers: PaperIndex, codes: np.ndarray, match: str) -> np.ndarray:
    """Rows whose primary subject (``match="primary"``), or any of whose categories (``"any"``), is in ``codes``."""
    rows = np.isin(papers.primary, codes)
    if match == "any":
        rows[papers.category_rows[np.isin(papers.categories, codes)]] = True
    return rows


def filter_mask(papers: PaperIndex, filters: SearchFilters, exclude_rows: list[int]) -> np.ndarray | None:
    """The rows that pass ``filters`` and are not in ``exclude_rows``; None when nothing is filtered."""
    mask = None

    def keep(rows: np.ndarray) -> None:
        nonlocal mask
        mask = rows if mask is None else mask & rows

    if filters.subjects:
        keep(_with_subjects(papers, subject_codes(papers, filters.subjects), filters.match))
    if filters.exclude_subjects:
        keep(~_with_subjects(papers, subject_codes(papers, filters.exclude_subjects), filters.match))
    if filters.date_from is not None or filters.date_to is not None:
        keep(_in_dates(papers.dates, filters.date_from, filters.date_to))
    rows = np.concatenate([papers.rows_of(filters.exclude_ids), np.asarray(exclude_rows, dtype=np.int64)])
    rows = rows[rows >= 0]
    if len(rows):
        if mask is None:
            mask = np.ones(papers.size, dtype=bool)
        mask[rows] = False
    return mask


def _in_dates(dates: np.ndarray, first: date | None, last: date | None) -> np.ndarray:
    keep = ~np.isnat(dates)  # a paper without a date fails any bound
    if first is not None:
        keep &= dates >= np.datetime64(first, "D")
    if last is not None:
        keep &= dates <= np.datetime64(last, "D")
    return keep


# --- search --------------------------------------------------------------------------------------------------


def search_parameters(
    index: faiss.Index, selector: faiss.IDSelector | None, k: int
) -> faiss.SearchParameters:
    """What a search of ``index`` with ``selector`` passes to FAISS: the index's own settings (nprobe, efSearch,
    k_factor), which a SearchParameters object would otherwise replace (nprobe 1, efSearch 16)."""
    if isinstance(index, faiss.IndexRefine):  # the base index filters its candidates; re-ranking keeps them
        base = search_parameters(faiss.downcast_index(index.base_index), selector, k)
        return faiss.IndexRefineSearchParameters(k_factor=index.k_factor, base_index_params=base)
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=max(index.hnsw.efSearch, k))
    return faiss.SearchParameters(sel=selector)


def _best(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest scores, best first (ties: lower position first)."""
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return top[np.lexsort((top, -scores[top]))]


def search_rows(
    papers: PaperIndex,
    query: np.ndarray,
    k: int,
    mask: np.ndarray | None,
    exact_max: int = EXACT_SUBSET_MAX,
) -> Found:
    """The rows of the best ``k`` papers for one normalised query among those ``mask`` keeps (all when None)."""
    index = papers.index
    flat = isinstance(index, faiss.IndexFlat)
    query = papers.fit_query(query)
    if mask is None:
        scores, rows = index.search(query, min(k, papers.size))
        matched, exact = papers.size, flat
    else:
        kept = np.flatnonzero(mask)
        matched = len(kept)
        k = min(k, matched)
        if k == 0:
            return Found(np.empty(0, np.int64), np.empty(0, np.float32), 0, True)
        exact = flat or matched <= exact_max
        scored = isinstance(index, faiss.IndexHNSW | faiss.IndexRefine)  # stored vectors read back one by one
        if exact and scored and papers.vectors_absent is None:
            scores = index.reconstruct_batch(kept) @ query[0]
            best = _best(scores, k)
            return Found(kept[best], scores[best], matched, True)
        bitmap = np.packbits(mask, bitorder="little")  # bit i of byte i // 8: row i passes
        selector = faiss.IDSelectorBitmap(papers.size, faiss.swig_ptr(bitmap))
        params = search_parameters(index, selector, k)
        if exact and isinstance(index, faiss.IndexIVF):
            params.nprobe = index.nlist  # every list, the kept papers' codes only: exact
        elif exact and not flat:
            exact = False  # another index type: only what its own search finds
        scores, rows = index.search(query, k, params=params)
    found = rows[0] >= 0  # an approximate index may find fewer than k
    return Found(rows[0][found], scores[0][found], matched, exact)


def snippet(text: str, chars: int = SNIPPET_CHARS) -> str:
    """The first ``chars`` characters of ``text``, cut at a word, with "..." when something is left out."""
    if len(text) <= chars:
        return text
    return cap_text(text, chars).rstrip(" ,;:.") + "..."


def _paper_row(papers: PaperIndex, paper_id: str) -> int:
    row = int(papers.rows_of([paper_id])[0])
    if row < 0:
        raise ApiError(404, "paper_not_found", f"no paper {paper_id!r} in the index ({papers.size} papers)")
    return row


def _index(rt: SearchRuntime) -> PaperIndex:
    if rt.index is None:
        raise ApiError(503, "index_not_loaded", f"no search index is loaded ({rt.index_absent})")
    return rt.index


def search_router(runtime: Any, embed: Embed) -> APIRouter:
    """``/search``, ``/papers/{id}`` and ``/subjects``; ``runtime`` is the app's ``Depends`` of its runtime and
    ``embed(rt, texts)`` its raw embeddings of texts (limits and batching included)."""
    router = APIRouter()

    @router.post("/search", responses=error_responses(401, 404, 413, 422, 429, 501, 503))
    async def search(body: SearchRequest, rt: SearchRuntime = runtime) -> SearchResponse:
        """The k papers of the index closest to a text, or to an indexed paper (its stored vector), that pass
        the filters; by paper, the paper itself is left out unless `include_self`."""
        papers = _index(rt)
        exclude: list[int] = []
        if body.paper_id is not None:
            row = _paper_row(papers, body.paper_id)
            if papers.vectors_absent is not None:
                raise ApiError(501, "paper_vectors_unavailable", f"search by paper: {papers.vectors_absent}")
            query = papers.vector(row)
            if not body.include_self:
                exclude.append(row)
        # Before embedding, so a bad filter costs no inference; in a thread, as it reads every row.
        mask = await asyncio.to_thread(filter_mask, papers, body.filters, exclude)
        if body.text is not None:
            vectors, _ = await embed(rt, [body.text])
            query = l2_normalize(vectors)[0]
        found = await asyncio.to_thread(search_rows, papers, query, body.k, mask)
        results = papers.records(found.rows)
        for rank, (paper, score) in enumerate(zip(results, found.scores, strict=True), start=1):
            paper.update(rank=rank, score=float(score), snippet=snippet(str(paper["abstract"])))
        return SearchResponse(
            model=rt.settings.model_name,
            query={"text": body.text, "paper_id": body.paper_id},  # type: ignore[arg-type]
            matched=found.matched,
            exact=found.exact,
            results=results,  # type: ignore[arg-type]
        )

    @router.get("/papers/{paper_id:path}", responses=error_responses(401, 404, 503))
    async def paper(paper_id: str, rt: SearchRuntime = runtime) -> PaperRecord:
        """One indexed paper's record (ids may hold a slash: `/papers/hep-th/9901001`)."""
        papers = _index(rt)
        return PaperRecord(**papers.records([_paper_row(papers, paper_id)])[0])  # type: ignore[arg-type]

    @router.get("/subjects", responses=error_responses(401, 503))
    async def subjects(rt: SearchRuntime = runtime) -> SubjectsResponse:
        """The subjects of the indexed papers, by name, with how many papers have each (primary, any category)."""
        papers = _index(rt)
        return SubjectsResponse(
            papers=papers.size,
            subjects=[
                {"subject": s, "primary": int(p), "any": int(a)}  # type: ignore[misc]
                for s, p, a in zip(papers.subjects, papers.primary_counts, papers.any_counts, strict=True)
            ],
        )

    return router
