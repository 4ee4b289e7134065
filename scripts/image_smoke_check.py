"""Requests against a running serving container (scripts/image_smoke.sh): each answer's status and JSON checked.

Standard library only, so it runs with any python3:

    python3 scripts/image_smoke_check.py http://127.0.0.1:8080 --key KEY [--fixtures]

``--fixtures``: the image carries scripts/image_models.py's six papers and three subjects, so the index size,
the classes and the nearest paper of a query are known exactly. Exits 1 with the first failed check.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.error
import urllib.request
from typing import Any


class CheckFailed(AssertionError):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


def call(url: str, path: str, body: dict[str, Any] | None = None, key: str | None = None) -> tuple[int, Any]:
    """Status and decoded JSON of GET (no body) or POST ``path``; any answer that is not JSON fails."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, kind = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers.get_content_type()
    check(kind == "application/json", f"{path}: {status} answered {kind}, not JSON: {raw[:200]!r}")
    return status, json.loads(raw)


def is_error(payload: Any) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("error"), str) and "error_type" in payload


def run_checks(url: str, key: str, fixtures: bool) -> list[str]:
    done = []
    status, health = call(url, "/health")
    check(status == 200 and health.get("status") == "ok", f"/health: {status} {health}")
    done.append("/health 200 ok")

    status, payload = call(url, "/info")
    check(status == 401 and is_error(payload), f"/info without a key: {status} {payload}")
    status, info = call(url, "/info", key=key)
    check(status == 200, f"/info: {status} {info}")
    dimension = info["dimension"]
    check(isinstance(dimension, int) and dimension > 0, f"/info dimension {dimension!r}")
    check(info["index_size"] and info["classifier_classes"], f"/info: no index or no classifier: {info}")
    if fixtures:
        check((info["index_size"], info["classifier_classes"]) == (6, 3), f"/info: {info}")
    done.append(f"/info 401 without key, 200 with: dimension {dimension}, {info['index_size']} papers")

    texts = ["Graph neural networks for molecules", "Dark matter halos of dwarf galaxies"]
    status, embedded = call(url, "/embed", {"input": texts}, key)
    check(status == 200, f"/embed: {status} {embedded}")
    vectors = embedded["embeddings"]
    check(len(vectors) == 2 and all(len(v) == dimension for v in vectors), "/embed: wrong shape")
    norms = [math.sqrt(sum(x * x for x in v)) for v in vectors]
    check(all(abs(n - 1) < 1e-3 for n in norms), f"/embed: norms {norms}, not unit vectors")
    check(len(embedded["tokens"]) == 2 and min(embedded["tokens"]) > 2, f"/embed tokens {embedded['tokens']}")
    status, payload = call(url, "/embed", {"input": []}, key)
    check(400 <= status < 500 and is_error(payload), f"/embed of no text: {status} {payload}")
    done.append(f"/embed 200: 2 unit vectors of {dimension}; empty input {status}")

    status, found = call(url, "/search", {"text": "dark matter in dwarf galaxies", "k": 3}, key)
    check(status == 200, f"/search: {status} {found}")
    results = found["results"]
    check(len(results) == min(3, info["index_size"]), f"/search: {len(results)} results")
    check([r["rank"] for r in results] == list(range(1, len(results) + 1)), "/search: ranks")
    scores = [r["score"] for r in results]
    check(
        scores == sorted(scores, reverse=True) and all(-1.01 <= s <= 1.01 for s in scores), f"scores {scores}"
    )
    check(all(r["id"] and r["title"] and r["subject"] for r in results), f"/search: {results}")
    if fixtures:
        check(results[0]["id"] == "2101.00002", f"/search: nearest paper {results[0]}")
    done.append(f"/search 200: {results[0]['id']} {results[0]['title']!r} at {scores[0]:.3f}")

    status, labelled = call(
        url, "/classify", {"text": "Transformers for machine translation", "top_n": 3}, key
    )
    check(status == 200, f"/classify: {status} {labelled}")
    top = labelled["top"]
    probabilities = [t["probability"] for t in top]
    check(labelled["subject"] == top[0]["subject"], f"/classify: {labelled}")
    check(probabilities == sorted(probabilities, reverse=True), f"/classify: {probabilities}")
    check(all(0 <= p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-4, f"{probabilities}")
    if fixtures:
        check(labelled["subject"] == "cs.LG", f"/classify: {labelled}")
    done.append(f"/classify 200: {labelled['subject']} at {labelled['probability']:.3f}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--key", required=True, help="the container's ARXIV_EMBED_API_KEY")
    parser.add_argument("--fixtures", action="store_true", help="the image carries scripts/image_models.py's")
    args = parser.parse_args()
    try:
        for line in run_checks(args.url.rstrip("/"), args.key, args.fixtures):
            print(f"  ok  {line}")
    except (CheckFailed, KeyError, TypeError, OSError) as error:
        sys.exit(f"smoke check failed: {type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
