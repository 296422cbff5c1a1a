"""The local Hub of tests/hubserver.py against the real huggingface_hub client, unpatched:
create, push (small files inline, weights through LFS basic), push again, download back."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError

from tests.hubserver import LocalHub, running_hub

REPO = "test-user/tiny-model"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[LocalHub]:
    with running_hub(tmp_path / "hub", token="hf_test") as hub:
        yield hub


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_size": 8, "model_type": "llama"}))
    (folder / "README.md").write_text("# tiny model\n\nRandom weights, for tests.\n")
    (folder / "model.safetensors").write_bytes(os.urandom(300_000))
    return folder


def local_files(folder: Path) -> dict[str, bytes]:
    files = (p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def lfs_puts(hub: LocalHub) -> list[str]:
    return [r for r in hub.requests if r.startswith("PUT /lfs-objects/")]


def test_push_twice_then_download(hub: LocalHub, folder: Path, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    url = api.create_repo(REPO, private=True)
    assert url.repo_id == REPO and hub.repo(REPO).private
    api.create_repo(REPO, private=False, exist_ok=True)  # 409 from the hub, tolerated
    assert hub.repo(REPO).private

    first = api.upload_folder(folder_path=folder, repo_id=REPO, commit_message="Add tiny model")
    assert hub.files(REPO) == local_files(folder)
    assert hub.lfs_paths(REPO) == {"model.safetensors"}  # config.json, README.md went inline
    assert len(lfs_puts(hub)) == 1
    assert [c["message"] for c in hub.commits(REPO)] == ["Add tiny model"]
    assert first.oid == hub.commits(REPO)[0]["id"]
    assert not any("xet" in r for r in hub.requests)

    (folder / "config.json").write_text(json.dumps({"hidden_size": 16, "model_type": "llama"}))
    second = api.upload_folder(folder_path=folder, repo_id=REPO, commit_message="Wider")
    commits = hub.commits(REPO)
    assert [c["message"] for c in commits] == ["Add tiny model", "Wider"]
    assert commits[1]["parent"] == first.oid and second.oid == commits[1]["id"]
    assert hub.files(REPO) == local_files(folder)
    assert len(lfs_puts(hub)) == 1  # the unchanged weights were not sent again

    cache = tmp_path / "cache"
    snapshot = Path(
        snapshot_download(REPO, endpoint=hub.endpoint, token=hub.token, cache_dir=cache)
    )
    assert snapshot.name == second.oid
    assert local_files(snapshot) == local_files(folder)

    old = hf_hub_download(
        REPO,
        "config.json",
        revision=first.oid,
        endpoint=hub.endpoint,
        token=hub.token,
        cache_dir=cache,
    )
    assert json.loads(Path(old).read_text())["hidden_size"] == 8
    assert sorted(api.list_repo_files(REPO)) == ["README.md", "config.json", "model.safetensors"]
    assert api.model_info(REPO).sha == second.oid


def test_delete_and_branch(hub: LocalHub, folder: Path) -> None:
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo(REPO)
    assert not hub.repo(REPO).private
    api.upload_folder(folder_path=folder, repo_id=REPO, commit_message="one")
    api.create_branch(REPO, branch="dev")
    api.create_branch(REPO, branch="dev", exist_ok=True)
    api.delete_file("README.md", REPO, revision="dev", commit_message="drop readme")
    assert set(hub.files(REPO, "dev")) == {"config.json", "model.safetensors"}
    assert set(hub.files(REPO)) == {"README.md", "config.json", "model.safetensors"}
    assert [c["message"] for c in hub.commits(REPO, "dev")] == ["one", "drop readme"]


def test_bad_token_is_401(hub: LocalHub) -> None:
    with pytest.raises(HfHubHTTPError) as raised:
        HfApi(endpoint=hub.endpoint, token="hf_wrong").create_repo(REPO)
    assert raised.value.response.status_code == 401
    response = httpx.get(f"{hub.endpoint}/api/whoami-v2")
    assert response.status_code == 401 and "error" in response.json()
    assert hub.repos == {}


def test_lfs_put_checks_signature_and_bytes(hub: LocalHub) -> None:
    HfApi(endpoint=hub.endpoint, token=hub.token).create_repo(REPO)
    data = os.urandom(1000)
    oid = hashlib.sha256(data).hexdigest()
    batch = httpx.post(
        f"{hub.endpoint}/{REPO}.git/info/lfs/objects/batch",
        headers={"Authorization": f"Bearer {hub.token}"},
        json={
            "operation": "upload",
            "transfers": ["basic"],
            "objects": [{"oid": oid, "size": len(data)}],
        },
    ).json()
    assert batch["transfer"] == "basic"
    href = batch["objects"][0]["actions"]["upload"]["href"]
    assert httpx.put(href.replace("sig=", "sig=0"), content=data).status_code == 403
    assert httpx.put(href, content=data[:-1] + b"x").status_code == 400
    assert not hub.blob(oid).exists()
    assert httpx.put(href, content=data).status_code == 200
    assert hub.blob(oid).read_bytes() == data


def test_commit_is_all_or_nothing(hub: LocalHub) -> None:
    HfApi(endpoint=hub.endpoint, token=hub.token).create_repo(REPO)
    lines = [
        {"key": "header", "value": {"summary": "broken", "description": ""}},
        {"key": "file", "value": {"path": "a.txt", "content": "YQ==", "encoding": "base64"}},
        {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "0" * 64}},
    ]
    response = httpx.post(
        f"{hub.endpoint}/api/models/{REPO}/commit/main",
        headers={"Authorization": f"Bearer {hub.token}", "Content-Type": "application/x-ndjson"},
        content="".join(json.dumps(line) + "\n" for line in lines),
    )
    assert response.status_code == 400 and "not uploaded" in response.json()["error"]
    assert hub.commits(REPO) == [] and hub.files(REPO) == {}
