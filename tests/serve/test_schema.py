"""Schemathesis against the live app's OpenAPI schema: generated requests, valid and invalid, never get a
server error, and every response conforms to the schema (status codes, content types, bodies).

Schemathesis' Python API with Hypothesis' ``@given`` per operation (its lazy pytest loader does not work with
pytest 9); examples are bounded so the run stays short.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings

pytest_plugins = ["onnx_fixtures"]  # onnx_minilm_dir: the bundled MiniLM exported once per session

HEADERS = {"Authorization": "Bearer test-key"}  # live_url's app has an API key


@pytest.mark.slow
@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_api_conforms_to_its_schema(live_url: str, mode: schemathesis.GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    # A schema-valid request may still be too long in tokens (truncate=false) or, with multi-byte escapes,
    # in bytes: the documented 413; a generated paper id is not in the index: the documented 404. Everything
    # else valid must be accepted.
    schema.config.checks.positive_data_acceptance.expected_statuses = ["2xx", "404", "413"]
    # Texts over the published maxLength / maxItems get the documented 413 rather than a 422.
    schema.config.checks.negative_data_rejection.expected_statuses = [
        "400",
        "401",
        "404",
        "405",
        "413",
        "422",
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        *("/embed", "/v1/embeddings", "/v1/models", "/v1/models/{model_id}"),
        *("/search", "/papers/{paper_id}", "/subjects", "/classify", "/health", "/ready"),
    }
    for operation in operations:
        if mode is schemathesis.GenerationMode.NEGATIVE and not len(operation.body):
            continue  # nothing to get wrong in a GET without parameters
        # /v1/embeddings refuses a blank input (schema-valid: whitespace or invisible characters) with 400.
        blank_refused = ["400"] if operation.path == "/v1/embeddings" else []
        schema.config.checks.positive_data_acceptance.expected_statuses = [
            "2xx",
            "404",
            "413",
            *blank_refused,
        ]

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            # The one rule JSON Schema cannot say: date_from <= date_to (else a 422).
            dates = ((case.body or {}).get("filters") or {}) if isinstance(case.body, dict) else {}
            if mode is schemathesis.GenerationMode.POSITIVE and isinstance(dates, dict):
                assume(
                    not (
                        dates.get("date_from")
                        and dates.get("date_to")
                        and dates["date_from"] > dates["date_to"]
                    )
                )
            case.call_and_validate(headers=HEADERS, timeout=30)

        check()
