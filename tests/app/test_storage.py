"""The artifact stores pass the same tests: local folder and S3-compatible (moto server)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from slimforge.app.artifacts.storage import (
    ArtifactStore,
    ChecksumMismatch,
    LocalArtifactStore,
    S3ArtifactStore,
)
from tests.s3server import running_s3


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "local":
        yield LocalArtifactStore(tmp_path / "store")
    else:
        with running_s3() as (_, client):
            yield S3ArtifactStore(client, "artifacts", "slimforge/")


def make_folder(root: Path) -> tuple[Path, list[dict[str, object]]]:
    folder = root / "export"
    (folder / "sub").mkdir(parents=True)
    data = {
        "config.json": b'{"a": 1}',
        "model.safetensors": bytes(range(256)) * 4096,  # 1 MiB, more than one read chunk
        "sub/notes.txt": b"",
    }
    for name, body in data.items():
        (folder / name).write_bytes(body)
    files = [
        {"path": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
        for n, b in data.items()
    ]
    return folder, files


def test_put_read_ranges_download_and_delete(store: ArtifactStore, tmp_path: Path) -> None:
    folder, files = make_folder(tmp_path)
    weights = (folder / "model.safetensors").read_bytes()
    location = store.put_folder("job_1", folder)
    assert not folder.exists()  # consumed
    assert store.size(location, "model.safetensors") == len(weights)
    assert store.size(location, "missing.bin") is None
    assert store.size(location, "../job_1/config.json") is None  # no escaping the artifact
    assert b"".join(store.read(location, "model.safetensors")) == weights
    assert b"".join(store.read(location, "model.safetensors", 10, 19)) == weights[10:20]
    assert b"".join(store.read(location, "model.safetensors", len(weights) - 5)) == weights[-5:]
    dest = tmp_path / "copy"
    store.download(location, files, dest)
    assert (dest / "model.safetensors").read_bytes() == weights
    assert (dest / "sub" / "notes.txt").read_bytes() == b""
    tampered = [{**files[0], "sha256": "0" * 64}]
    with pytest.raises(ChecksumMismatch, match=r"config\.json"):
        store.download(location, tampered, tmp_path / "bad")
    # A second attempt of the same job replaces the first.
    folder2, _ = make_folder(tmp_path / "again")
    (folder2 / "config.json").write_bytes(b'{"a": 2}')
    location2 = store.put_folder("job_1", folder2)
    assert b"".join(store.read(location2, "config.json")) == b'{"a": 2}'
    store.delete(location2)
    assert store.size(location2, "config.json") is None
    store.delete(location2)  # already gone: no error


def test_local_store_never_shows_a_half_written_artifact(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    folder, _ = make_folder(tmp_path)
    store.put_folder("job_2", folder)
    leftovers = [p.name for p in (tmp_path / "store").iterdir()]
    assert leftovers == ["job_2"]  # the temporary folder was renamed into place
