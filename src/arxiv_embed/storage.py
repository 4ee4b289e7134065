"""Versioned stage snapshots in Google Cloud Storage, switched on by ``meta.use_gcs``.

A stage wrapped by :func:`stage_storage` keeps its outputs in
``gs://<meta.gcs_bucket>/<meta.gcs_prefix>/<stage>/<data version>/``. The data version is a hash of what
produced the outputs, read from ``dvc.yaml``: the resolved values of the params the stage lists, the content
of its source dependencies (code, raw input) and the data versions of the upstream stages whose outputs it
reads. It needs no intermediate file, so a cloud job and a local run of the same code and params agree on it
and share one snapshot:

* the snapshot exists: its files are downloaded to the declared outs and the stage body is skipped;
* otherwise: inputs missing here are downloaded from their upstream snapshots, the stage runs, and its outs
  are uploaded with ``_manifest.json`` last (a snapshot without a manifest is incomplete and ignored).

Under a data-parallel launcher (``torchrun``) only the main process restores, pulls and uploads; the other
processes wait for it and skip the stage too when it restored the snapshot.

With ``meta.use_gcs: false`` (the default) the wrapper only calls the stage::

    @stage_storage("split")
    def main() -> None: ...

Credentials are Google's Application Default Credentials; ``STORAGE_EMULATOR_HOST`` points everything at an
emulator (anonymous access). Requests have timeouts, and missing credentials, a missing bucket or a missing
input stop the stage with a one-line reason.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import posixpath
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import yaml

from arxiv_embed.distributed import on_main_process
from arxiv_embed.params import DEFAULT_PARAMS, ParamsError, read_params
from arxiv_embed.sources import local_path

P = ParamSpec("P")
R = TypeVar("R")

MANIFEST = "_manifest.json"
DEFAULT_PIPELINE = Path("dvc.yaml")
# Where the data lives, not what it is: left out of the data version.
LOCATION_PARAMS = frozenset({"meta.use_gcs", "meta.gcs_bucket", "meta.gcs_prefix"})
# Sources named by a param but not listed as a dvc dependency (so that sources other than a file need no local
# path): the raw snapshot, read when prepare.source.kind is "file". Like dependencies, they count by content.
CONTENT_PARAMS = {"prepare.source.uri": ("prepare.source.kind", "file")}
_VAR = re.compile(r"\$\{\s*([A-Za-z0-9_.-]+)\s*\}")
_SKIP_PARTS = frozenset({"__pycache__", ".ipynb_checkpoints"})


class StorageError(RuntimeError):
    """The bucket, the credentials or a snapshot are not what the stage needs."""


@dataclass(frozen=True)
class Location:
    """``meta.use_gcs``, ``meta.gcs_bucket`` and ``meta.gcs_prefix``: where snapshots live (not what they are)."""

    use_gcs: bool = False
    gcs_bucket: str = ""
    gcs_prefix: str = ""


def location(params: dict[str, Any]) -> Location:
    """The snapshot location keys of ``meta`` (the stage itself checks the rest of the file)."""
    meta = params.get("meta") or {}
    found = Location(**{k: meta[k] for k in ("use_gcs", "gcs_bucket", "gcs_prefix") if k in meta})
    if not isinstance(found.use_gcs, bool):
        raise ParamsError(f"params: meta.use_gcs = {found.use_gcs!r}: must be true or false")
    if not isinstance(found.gcs_bucket, str) or not isinstance(found.gcs_prefix, str):
        raise ParamsError("params: meta.gcs_bucket and meta.gcs_prefix must be strings")
    return found


@dataclass(frozen=True)
class StageSpec:
    """One stage of ``dvc.yaml`` with its paths interpolated."""

    name: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]  # outs, metrics and plots
    params: tuple[str, ...]


# ---------------------------------------------------------------------------------------------------------
# The pipeline as dvc.yaml declares it


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise StorageError(f"dvc.yaml uses ${{{dotted}}}, which params.yaml does not define")
        value = value[part]
    return value


def interpolate(text: str, params: dict[str, Any]) -> str:
    """Replace ``${a.b}`` by its value in params.yaml, as DVC does."""
    return _VAR.sub(lambda m: str(_lookup(params, m.group(1))), text)


def _norm(path: str) -> str:
    return posixpath.normpath(path.replace("\\", "/")) if "://" not in path else path


def _entries(items: Any) -> list[str]:
    """Paths of a deps/outs/metrics/plots list, whose entries are strings or ``{path: options}``."""
    paths: list[str] = []
    for item in items or []:
        paths.extend([item] if isinstance(item, str) else list(item))
    return paths


def parse_pipeline(dvc_yaml: dict[str, Any], params: dict[str, Any]) -> dict[str, StageSpec]:
    """The stages of a parsed ``dvc.yaml`` (``foreach``/``matrix`` stages are not supported)."""
    stages: dict[str, StageSpec] = {}
    for name, stage in (dvc_yaml.get("stages") or {}).items():
        if not isinstance(stage, dict) or "foreach" in stage or "matrix" in stage:
            raise StorageError(f"dvc.yaml: stage '{name}' must be a plain stage (no foreach/matrix)")
        keys: list[str] = []
        for entry in stage.get("params") or []:
            if isinstance(entry, str):
                keys.append(entry)
            else:
                for file, file_keys in entry.items():
                    if Path(file).name != DEFAULT_PARAMS.name:
                        raise StorageError(f"dvc.yaml: stage '{name}' reads params from {file} (unsupported)")
                    keys.extend(file_keys or [])
        stages[name] = StageSpec(
            name=name,
            deps=tuple(_norm(interpolate(d, params)) for d in _entries(stage.get("deps"))),
            outs=tuple(
                _norm(interpolate(o, params))
                for kind in ("outs", "metrics", "plots")
                for o in _entries(stage.get(kind))
            ),
            params=tuple(interpolate(k, params) for k in keys),
        )
    return stages


def read_pipeline(params: dict[str, Any], path: str | Path = DEFAULT_PIPELINE) -> dict[str, StageSpec]:
    try:
        with open(path, encoding="utf-8") as f:
            dvc_yaml = yaml.safe_load(f) or {}
    except FileNotFoundError as e:
        raise StorageError(f"{path} not found: run from the repository root") from e
    return parse_pipeline(dvc_yaml, params)


def _contains(parent: str, child: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def producers(dep: str, stages: dict[str, StageSpec], skip: str) -> list[tuple[str, str]]:
    """``(stage, out)`` pairs of the other stages whose outs hold ``dep`` or lie inside it."""
    return [
        (s.name, out)
        for s in stages.values()
        if s.name != skip
        for out in s.outs
        if _contains(out, dep) or _contains(dep, out)
    ]


# ---------------------------------------------------------------------------------------------------------
# Data versions


def param_value(params: dict[str, Any], key: str) -> Any:
    """The value a stage sees for ``section.a.b`` (params.yaml holds the composed values)."""
    value: Any = params
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise StorageError(f"params: dvc.yaml lists '{key}', which params.yaml does not define")
        value = value[part]
    return value


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(path: Path) -> Iterator[Path]:
    """The files of an out or dep: itself, or everything under it but caches, sorted."""
    if path.is_file():
        yield path
        return
    for p in sorted(path.rglob("*")):
        if p.is_file() and not _SKIP_PARTS.intersection(p.parts) and p.suffix != ".pyc":
            yield p


def fingerprint(path: str) -> str:
    """Content hash of a local file or folder; for a URL, the content hash its store reports."""
    if "://" in path:
        return _remote_fingerprint(path)
    p = Path(path)
    if not p.exists():
        raise StorageError(f"dependency {path} does not exist")
    if p.is_file():
        return _md5_file(p)
    digest = hashlib.md5(usedforsecurity=False)
    for f in _files(p):
        digest.update(f"{f.relative_to(p).as_posix()}\0{_md5_file(f)}\n".encode())
    return digest.hexdigest()


def _remote_fingerprint(url: str) -> str:
    import fsspec

    if url.startswith("gs://"):
        fs, path = gcs_filesystem(), url.removeprefix("gs://")
    else:
        fs, path = fsspec.core.url_to_fs(url)
    try:
        info = fs.info(path)
    except FileNotFoundError as e:
        raise StorageError(f"dependency {url} does not exist") from e
    if info.get("md5Hash"):  # GCS: base64 of the content's md5, the same as a local copy's md5
        return base64.b64decode(info["md5Hash"]).hex()
    tag = info.get("ETag") or info.get("etag") or info.get("crc32c") or info.get("mtime")
    return f"{info.get('size')}-{tag}"


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (an empty mapping stays as a leaf)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def data_version(
    name: str, stages: dict[str, StageSpec], params: dict[str, Any], _memo: dict[str, str] | None = None
) -> str:
    """Hash of the params, source contents and upstream data versions that produce stage ``name``'s outs."""
    memo = {} if _memo is None else _memo
    if name in memo:
        return memo[name]
    if name not in stages:
        raise StorageError(f"dvc.yaml has no stage '{name}'")
    spec = stages[name]
    values = _flatten({k: param_value(params, k) for k in spec.params if k not in LOCATION_PARAMS})
    # A source named by a param (e.g. the raw snapshot's path) counts by its content, not by its location.
    named = {_norm(v): k for k, v in values.items() if isinstance(v, str)}
    upstream: dict[str, str] = {}
    sources: dict[str, str] = {}
    for key, (switch, when) in CONTENT_PARAMS.items():
        if key in values and values.get(switch) == when:
            sources[f"${{{key}}}"] = fingerprint(local_path(str(values.pop(key))))
    for dep in spec.deps:
        found = producers(dep, stages, skip=name)
        for stage, _ in found:
            upstream[stage] = data_version(stage, stages, params, memo)
        if not found:
            key = f"${{{named[dep]}}}" if dep in named else dep
            sources[key] = fingerprint(dep)
            values.pop(named.get(dep, ""), None)
    payload = json.dumps(
        {"stage": name, "params": values, "sources": sources, "upstream": upstream},
        sort_keys=True,
        default=str,
    )
    memo[name] = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return memo[name]


# ---------------------------------------------------------------------------------------------------------
# The bucket


def gcs_filesystem(timeout: float = 60.0) -> Any:
    """A gcsfs filesystem with Application Default Credentials (anonymous on an emulator), or a StorageError."""
    # The plain filesystem, whatever GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT said when gcsfs was imported: the
    # experimental one probes the bucket layout over gRPC, which an emulator cannot answer (60 s per call).
    from gcsfs.core import GCSFileSystem

    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        token: Any = "anon"
    else:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            google.auth.default()
        except DefaultCredentialsError as e:
            raise StorageError(
                "no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS to a key file, run "
                f"`gcloud auth application-default login`, or run on GCP with a service account ({e})"
            ) from e
        token = "google_default"
    return GCSFileSystem(
        token=token,
        endpoint_url=emulator or None,
        requests_timeout=timeout,
        timeout=timeout,
        cache_timeout=0,
        skip_instance_cache=True,
    )


def open_bucket(bucket: str, timeout: float = 60.0) -> Any:
    """A gcsfs filesystem that can reach ``bucket``, or a StorageError that says why not."""
    if not bucket:
        raise StorageError("meta.gcs_bucket is empty")
    fs = gcs_filesystem(timeout)
    try:
        fs.ls(bucket, detail=False)
    except FileNotFoundError as e:
        raise StorageError(f"bucket gs://{bucket} does not exist (meta.gcs_bucket)") from e
    except Exception as e:  # auth, network, timeouts: gcsfs raises many types
        raise StorageError(f"cannot reach gs://{bucket}: {type(e).__name__}: {e}") from e
    return fs


@dataclass
class Snapshots:
    """The snapshots of one pipeline in ``gs://bucket/prefix``."""

    fs: Any
    root: str  # bucket/prefix
    stages: dict[str, StageSpec]
    params: dict[str, Any]

    def __post_init__(self) -> None:
        self._memo: dict[str, str] = {}

    def version(self, stage: str) -> str:
        return data_version(stage, self.stages, self.params, self._memo)

    def url(self, stage: str) -> str:
        return f"{self.root}/{stage}/{self.version(stage)}"

    def manifest(self, stage: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(f"{self.url(stage)}/{MANIFEST}"))
        except FileNotFoundError:
            return None

    def download(self, stage: str, outs: tuple[str, ...] | list[str] | None = None) -> bool:
        """Download ``outs`` (default: all) of the stage's snapshot; False when there is no snapshot."""
        manifest = self.manifest(stage)
        if manifest is None:
            return False
        wanted = list(manifest["outs"] if outs is None else outs)
        files = {rel: md5 for rel, md5 in manifest["files"].items() if any(_contains(o, rel) for o in wanted)}
        for out in wanted:
            local = Path(out)
            if local.is_dir():
                shutil.rmtree(local)
            elif local.exists():
                local.unlink()
        for rel in files:
            Path(rel).parent.mkdir(parents=True, exist_ok=True)
        if files:
            self.fs.get([f"{self.url(stage)}/{rel}" for rel in files], list(files))
        for rel, md5 in files.items():
            if _md5_file(Path(rel)) != md5:
                raise StorageError(f"{rel} from {self.url(stage)} does not match its manifest")
        return True

    def pull_inputs(self, stage: str) -> list[str]:
        """Download the stage's deps that are missing here from their upstream snapshots."""
        pulled = []
        for dep in self.stages[stage].deps:
            if Path(dep).exists() or "://" in dep:
                continue
            for upstream, out in producers(dep, self.stages, skip=stage):
                if not self.download(upstream, [out]):
                    raise StorageError(
                        f"input {dep} is missing here and gs://{self.url(upstream)} has no snapshot: "
                        f"run stage '{upstream}' with meta.use_gcs=true first"
                    )
                pulled.append(out)
        return pulled

    def upload(self, stage: str) -> str:
        """Upload the stage's outs, then its manifest; returns the snapshot's URL."""
        outs = self.stages[stage].outs
        files: dict[str, str] = {}
        for out in outs:
            if not Path(out).exists():
                raise StorageError(f"stage '{stage}' did not write its declared out {out}")
            files.update({f.as_posix(): _md5_file(f) for f in _files(Path(out))})
        url = self.url(stage)
        if files:
            self.fs.put(list(files), [f"{url}/{rel}" for rel in files])
        manifest = {
            "stage": stage,
            "data_version": self.version(stage),
            "outs": list(outs),
            "files": files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.fs.pipe_file(f"{url}/{MANIFEST}", json.dumps(manifest, indent=2).encode())
        return f"gs://{url}"


def open_snapshots(
    params: dict[str, Any], meta: Location, pipeline: str | Path = DEFAULT_PIPELINE, timeout: float = 60.0
) -> Snapshots:
    stages = read_pipeline(params, pipeline)
    fs = open_bucket(meta.gcs_bucket, timeout=timeout)
    root = "/".join(p.strip("/") for p in (meta.gcs_bucket, meta.gcs_prefix) if p.strip("/"))
    return Snapshots(fs=fs, root=root, stages=stages, params=params)


def stage_storage(
    name: str, params_path: str | Path = DEFAULT_PARAMS, pipeline: str | Path = DEFAULT_PIPELINE
) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    """Decorate a stage's ``main()``: with ``meta.use_gcs`` it restores or publishes the stage's snapshot."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R | None]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R | None:
            params = read_params(params_path)
            meta = location(params)
            if not meta.use_gcs:
                return fn(*args, **kwargs)
            # In a data-parallel launch only the main process talks to the bucket; the others wait for it.
            snapshots: Snapshots | None = None

            def restore() -> bool:
                nonlocal snapshots
                snapshots = open_snapshots(params, meta, pipeline)
                if snapshots.download(name):
                    print(f"{name}: outputs restored from gs://{snapshots.url(name)}", flush=True)
                    return True
                for out in snapshots.pull_inputs(name):
                    print(f"{name}: input {out} pulled from the bucket", flush=True)
                return False

            try:
                if on_main_process(restore):
                    return None
                result = fn(*args, **kwargs)
                if snapshots is not None:
                    print(f"{name}: outputs pushed to {snapshots.upload(name)}", flush=True)
            except StorageError as e:
                raise SystemExit(f"{name}: {e}") from e
            return result

        return run

    return decorate


def status(snapshots: Snapshots) -> list[tuple[str, str, bool]]:
    """``(stage, data version, snapshot present)`` for every stage of the pipeline."""
    return [
        (name, snapshots.version(name), snapshots.manifest(name) is not None) for name in snapshots.stages
    ]


def main(argv: list[str] | None = None) -> None:
    """``python -m arxiv_embed.storage``: the data version of each stage and whether its snapshot exists."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m arxiv_embed.storage", description=main.__doc__)
    parser.add_argument("--params", default=str(DEFAULT_PARAMS))
    parser.add_argument("--pipeline", default=str(DEFAULT_PIPELINE))
    args = parser.parse_args(argv)
    params = read_params(args.params)
    meta = location(params)
    try:
        snapshots = open_snapshots(params, meta, args.pipeline)
        rows = status(snapshots)
    except StorageError as e:
        raise SystemExit(f"storage: {e}") from e
    width = max(len(name) for name, _, _ in rows)
    for name, version, present in rows:
        print(
            f"{name:<{width}}  {version}  {'present' if present else 'missing'}  gs://{snapshots.root}/{name}"
        )


if __name__ == "__main__":
    main()
