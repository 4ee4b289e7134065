"""arxiv_embed.storage: data versions from dvc.yaml (pure), and stage snapshots in a real GCS API
(gcp-storage-emulator): push, restore without re-running, inputs pulled from upstream, clear errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from gcsfs.core import GCSFileSystem

from arxiv_embed.storage import (
    StageSpec,
    StorageError,
    data_version,
    interpolate,
    parse_pipeline,
    producers,
    stage_storage,
)

PARAMS = {
    "paths": {"a_dir": "data/a", "metrics_dir": "metrics"},
    "meta": {
        "seed": 1,
        "base_model": "m",
        "text_mode": "title_abstract",
        "use_gcs": True,
        "gcs_bucket": "set-by-test",
        "gcs_prefix": "snaps",
    },
    "first": {"n": 3, "source": {"uri": "raw.txt"}},
    "second": {"k": 2},
}

PIPELINE = {
    "stages": {
        "first": {
            "cmd": "python first.py",
            "deps": ["${first.source.uri}", "first.py"],
            "params": ["first", "meta.seed", "meta.gcs_bucket"],
            "outs": ["${paths.a_dir}"],
            "metrics": [{"${paths.metrics_dir}/first.json": {"cache": False}}],
        },
        "second": {
            "cmd": "python second.py",
            "deps": ["${paths.a_dir}/numbers.txt", "second.py"],
            "params": [{"params.yaml": ["second.k"]}],
            "outs": ["data/b.txt"],
        },
    }
}


def test_interpolate_uses_params_values():
    assert interpolate("${paths.a_dir}/x.parquet", PARAMS) == "data/a/x.parquet"
    assert interpolate("n=${ first.n }", PARAMS) == "n=3"
    with pytest.raises(StorageError, match=r"\$\{paths.nope\}"):
        interpolate("${paths.nope}", PARAMS)


def test_parse_pipeline_collects_deps_outs_metrics_and_params():
    stages = parse_pipeline(PIPELINE, PARAMS)
    assert stages["first"] == StageSpec(
        name="first",
        deps=("raw.txt", "first.py"),
        outs=("data/a", "metrics/first.json"),
        params=("first", "meta.seed", "meta.gcs_bucket"),
    )
    assert stages["second"].deps == ("data/a/numbers.txt", "second.py")
    assert stages["second"].params == ("second.k",)
    with pytest.raises(StorageError, match="foreach"):
        parse_pipeline({"stages": {"x": {"foreach": [1], "do": {}}}}, PARAMS)


def test_producers_match_files_inside_an_out_folder():
    stages = parse_pipeline(PIPELINE, PARAMS)
    assert producers("data/a/numbers.txt", stages, skip="second") == [("first", "data/a")]
    assert producers("data", stages, skip="x") == [("first", "data/a"), ("second", "data/b.txt")]
    assert producers("second.py", stages, skip="second") == []


def write_sources(root: Path, raw: str = "1 2 3\n") -> None:
    (root / "raw.txt").write_text(raw)
    (root / "first.py").write_text("# first\n")
    (root / "second.py").write_text("# second\n")


def versions(params: dict) -> dict[str, str]:
    stages = parse_pipeline(PIPELINE, params)
    return {name: data_version(name, stages, params) for name in stages}


def with_changes(**sections: dict) -> dict:
    params = json.loads(json.dumps(PARAMS))
    for section, values in sections.items():
        params[section].update(values)
    return params


def test_data_version_follows_what_produced_the_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_sources(tmp_path)
    base = versions(PARAMS)
    assert len(base["first"]) == 16 and base["first"] != base["second"]
    assert versions(PARAMS) == base  # deterministic
    # Location only: bucket, prefix, use_gcs -> same versions.
    assert versions(with_changes(meta={"gcs_bucket": "other", "use_gcs": False})) == base
    # An upstream param changes -> the stage and everything downstream change.
    changed = versions(with_changes(first={"n": 4}))
    assert changed["first"] != base["first"] and changed["second"] != base["second"]
    # A downstream param changes only the downstream stage.
    changed = versions(with_changes(second={"k": 5}))
    assert changed["first"] == base["first"] and changed["second"] != base["second"]
    # Source content counts; its location does not.
    Path("moved").mkdir()
    Path("moved/raw.txt").write_text("1 2 3\n")
    assert versions(with_changes(first={"source": {"uri": "moved/raw.txt"}})) == base
    Path("raw.txt").write_text("1 2 4\n")
    changed = versions(PARAMS)
    assert changed["first"] != base["first"] and changed["second"] != base["second"]


# --- against the emulator ------------------------------------------------------------------------------

CALLS: list[str] = []


@stage_storage("first")
def first_main() -> None:
    CALLS.append("first")
    numbers = [int(x) for x in Path("raw.txt").read_text().split()]
    Path("data/a").mkdir(parents=True, exist_ok=True)
    Path("data/a/numbers.txt").write_text("\n".join(str(x * 10) for x in numbers))
    Path("data/a/sub").mkdir(exist_ok=True)
    Path("data/a/sub/count.txt").write_text(str(len(numbers)))
    Path("metrics").mkdir(exist_ok=True)
    Path("metrics/first.json").write_text(json.dumps({"first_count": len(numbers)}))


@stage_storage("second")
def second_main() -> None:
    CALLS.append("second")
    total = sum(int(x) for x in Path("data/a/numbers.txt").read_text().split())
    Path("data/b.txt").write_text(str(total))


def make_workspace(root: Path, bucket: str, **meta) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_sources(root)
    params = with_changes(meta={"gcs_bucket": bucket, **meta})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE))
    return root


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.clear()


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def test_stage_outputs_go_to_the_bucket_and_are_restored_without_rerunning(
    tmp_path, monkeypatch, gcs_env, bucket
):
    work = make_workspace(tmp_path / "work", bucket)
    monkeypatch.chdir(work)
    first_main()
    assert CALLS == ["first"]
    produced = {**local_files(work / "data"), **local_files(work / "metrics")}

    version = versions(yaml.safe_load(Path("params.yaml").read_text()))["first"]
    fs = GCSFileSystem(token="anon", endpoint_url=gcs_env, skip_instance_cache=True)
    prefix = f"{bucket}/snaps/first/{version}"
    assert sorted(fs.find(prefix)) == [
        f"{prefix}/_manifest.json",
        f"{prefix}/data/a/numbers.txt",
        f"{prefix}/data/a/sub/count.txt",
        f"{prefix}/metrics/first.json",
    ]
    manifest = json.loads(fs.cat_file(f"{prefix}/_manifest.json"))
    assert manifest["data_version"] == version and manifest["outs"] == ["data/a", "metrics/first.json"]

    # A second workspace (another machine, a cloud job): same params and sources -> restored, not re-run.
    other = make_workspace(tmp_path / "other", bucket)
    monkeypatch.chdir(other)
    first_main()
    assert CALLS == ["first"]
    assert {**local_files(other / "data"), **local_files(other / "metrics")} == produced

    # The downstream stage there pulls nothing (input present), runs, and publishes its own snapshot.
    second_main()
    assert CALLS == ["first", "second"]
    assert Path("data/b.txt").read_text() == "60"


def test_missing_inputs_are_pulled_from_the_upstream_snapshot(tmp_path, monkeypatch, gcs_env, bucket):
    monkeypatch.chdir(make_workspace(tmp_path / "producer", bucket))
    first_main()
    consumer = make_workspace(tmp_path / "consumer", bucket)
    monkeypatch.chdir(consumer)
    second_main()  # data/a/numbers.txt is not here: pulled from first's snapshot
    assert CALLS == ["first", "second"]
    assert Path("data/a/numbers.txt").read_text() == "10\n20\n30"
    assert Path("data/b.txt").read_text() == "60"


def test_missing_upstream_snapshot_is_a_clear_error(tmp_path, monkeypatch, gcs_env, bucket):
    monkeypatch.chdir(make_workspace(tmp_path / "w", bucket))
    with pytest.raises(SystemExit, match=r"second: input data/a/numbers.txt is missing here .* no snapshot"):
        second_main()
    assert CALLS == []


def test_use_gcs_false_touches_no_bucket(tmp_path, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.chdir(make_workspace(tmp_path / "w", "no-such-bucket", use_gcs=False))
    first_main()
    assert CALLS == ["first"]
    assert Path("data/a/numbers.txt").exists()


def test_missing_bucket_is_a_clear_error(tmp_path, monkeypatch, gcs_env):
    monkeypatch.chdir(make_workspace(tmp_path / "w", "no-such-bucket"))
    start = time.monotonic()
    with pytest.raises(SystemExit, match=r"first: bucket gs://no-such-bucket does not exist"):
        first_main()
    assert CALLS == [] and time.monotonic() - start < 30


def test_missing_credentials_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    monkeypatch.chdir(make_workspace(tmp_path / "w", "some-bucket"))
    start = time.monotonic()
    with pytest.raises(SystemExit, match=r"first: no Google Cloud credentials: set GOOGLE_APPLICATION_CRED"):
        first_main()
    assert CALLS == [] and time.monotonic() - start < 30


def test_a_source_in_the_bucket_has_the_version_of_its_local_copy(tmp_path, monkeypatch, gcs_env, bucket):
    monkeypatch.chdir(tmp_path)
    write_sources(tmp_path)
    fs = GCSFileSystem(token="anon", endpoint_url=gcs_env, skip_instance_cache=True)
    fs.pipe_file(f"{bucket}/raw/raw.txt", Path("raw.txt").read_bytes())
    local = versions(PARAMS)
    remote = versions(with_changes(first={"source": {"uri": f"gs://{bucket}/raw/raw.txt"}}))
    assert remote == local
    fs.pipe_file(f"{bucket}/raw/raw.txt", b"9 9 9\n")
    assert versions(with_changes(first={"source": {"uri": f"gs://{bucket}/raw/raw.txt"}})) != local


def test_status_cli_lists_versions_and_present_snapshots(tmp_path, monkeypatch, capsys, gcs_env, bucket):
    from arxiv_embed.storage import main

    monkeypatch.chdir(make_workspace(tmp_path / "w", bucket))
    first_main()
    capsys.readouterr()
    main([])
    current = versions(yaml.safe_load(Path("params.yaml").read_text()))
    assert capsys.readouterr().out.splitlines() == [
        f"first   {current['first']}  present  gs://{bucket}/snaps/first",
        f"second  {current['second']}  missing  gs://{bucket}/snaps/second",
    ]
