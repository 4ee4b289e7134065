"""vertex_job.yaml parses into aiplatform's CustomJobSpec; unknown fields and enum values fail."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloud_helpers import REPO
from google.cloud.aiplatform_v1.types import AcceleratorType, CustomJob, CustomJobSpec
from google.protobuf import json_format

PLACEHOLDERS = {"PROJECT_ID": "proj", "REGION": "europe-west4", "COMMIT_SHA": "0123abc", "GCS_BUCKET": "bkt"}


def _fill(value: Any) -> Any:
    """Apply the envsubst placeholders to every string value (strict: an unknown ${X} raises KeyError)."""
    if isinstance(value, str):
        return string.Template(value).substitute(PLACEHOLDERS)
    if isinstance(value, list):
        return [_fill(v) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v) for k, v in value.items()}
    return value


def parse_job(path: Path) -> CustomJob:
    spec = CustomJobSpec()
    json_format.ParseDict(_fill(yaml.safe_load(path.read_text())), CustomJobSpec.pb(spec))
    return CustomJob(display_name="arxiv-embed-train", job_spec=spec)


def test_vertex_job_is_a_gpu_job_running_the_train_image_with_gcs():
    job = parse_job(REPO / "vertex_job.yaml")
    (pool,) = job.job_spec.worker_pool_specs
    assert pool.machine_spec.accelerator_type == AcceleratorType.NVIDIA_L4
    assert pool.machine_spec.accelerator_count == 1
    container = pool.container_spec
    assert container.image_uri == "europe-west4-docker.pkg.dev/proj/arxiv-embed/train:0123abc"
    args = list(container.args)
    assert args[0] == "repro"
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "-S"]
    assert "meta.use_gcs=true" in overrides
    assert "meta.gcs_bucket=bkt" in overrides
    assert "prepare.source.uri=gs://bkt/raw/arxiv-sample.jsonl.gz" in overrides  # the image has no raw data
    assert job.job_spec.scheduling.timeout.total_seconds() == 4 * 3600


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("acceleratorType: NVIDIA_L4", "acceleratorType: NVIDIA_L5", "Invalid enum value NVIDIA_L5"),
        ("workerPoolSpecs:", "workerPools:", 'no field named "workerPools"'),
        ("acceleratorCount: 1", "acceleratorCount: one", "acceleratorCount"),
    ],
)
def test_broken_vertex_job_fails_to_parse(broken_copy, old, new, message):
    bad = broken_copy("vertex_job.yaml", old, new)
    with pytest.raises(json_format.ParseError, match=message):
        parse_job(bad)
