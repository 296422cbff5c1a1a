"""Artifact listing and download: manifest-listed files only, streamed, no traversal."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi.testclient import TestClient

from slimforge.app.artifacts.service import record_artifact
from slimforge.app.db import session_scope
from slimforge.app.settings import Settings


def _fake_artifact(api: TestClient, settings: Settings, job_id: str) -> dict[str, bytes]:
    """Write files into the store as the worker would and record their manifest."""
    files = {
        "config.json": b'{"a": 1}',
        "model.safetensors": b"\x00" * 300_000,
        "sub/notes.txt": b"hello",
    }
    folder = settings.artifacts_root / job_id
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (settings.artifacts_root / "secret.txt").write_text("not yours")
    with session_scope(api.app.state.session_factory) as session:
        record_artifact(
            session,
            job_id=job_id,
            location=job_id,
            files=[
                {"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                for n, d in files.items()
            ],
        )
    return files


def _job(api: TestClient, headers: dict[str, str], tmp_path: Path) -> str:
    (tmp_path / "c.txt").write_text("calibration text")
    body = {
        "model": {"id": "org/model"},
        "target": {"ratio": 0.5},
        "method": {"name": "svd"},
        "calibration": {"path": "c.txt"},
    }
    return str(api.post("/v1/jobs", json=body, headers=headers).json()["id"])


def test_no_artifact_before_the_job_succeeds(api: TestClient, auth, tmp_path) -> None:
    h = auth()
    job_id = _job(api, h, tmp_path)
    r = api.get(f"/v1/jobs/{job_id}/artifacts", headers=h)
    assert (
        r.status_code == 404 and "has no artifact (status 'queued')" in r.json()["error"]["message"]
    )


def test_list_and_download_with_checksums(api: TestClient, auth, settings, tmp_path) -> None:
    h = auth()
    job_id = _job(api, h, tmp_path)
    files = _fake_artifact(api, settings, job_id)
    listing = api.get(f"/v1/jobs/{job_id}/artifacts", headers=h).json()
    assert {f["path"] for f in listing["files"]} == set(files)
    assert listing["total_size"] == sum(len(d) for d in files.values())
    for entry in listing["files"]:
        r = api.get(entry["url"], headers=h)
        assert r.status_code == 200
        assert r.content == files[entry["path"]]
        assert hashlib.sha256(r.content).hexdigest() == entry["sha256"]
        assert r.headers["x-checksum-sha256"] == entry["sha256"]
    ranged = api.get(
        f"/v1/jobs/{job_id}/artifacts/model.safetensors", headers={**h, "Range": "bytes=0-9"}
    )
    assert ranged.status_code == 206 and len(ranged.content) == 10


def test_paths_outside_the_manifest_are_404(api: TestClient, auth, settings, tmp_path) -> None:
    h = auth()
    job_id = _job(api, h, tmp_path)
    _fake_artifact(api, settings, job_id)
    for path in [
        "../secret.txt",
        "..%2Fsecret.txt",
        "%2e%2e/secret.txt",
        "missing.bin",
        "sub/../../secret.txt",
        "/etc/passwd",
    ]:
        r = api.get(f"/v1/jobs/{job_id}/artifacts/{path}", headers=h)
        assert r.status_code == 404, path
        assert b"not yours" not in r.content


def _end(api: TestClient, job_id: str, *, days_ago: float = 0.0) -> None:
    """Mark the job ended (as the worker would), ``days_ago``."""
    from datetime import timedelta

    from sqlalchemy import update

    from slimforge.app.db import utcnow
    from slimforge.app.jobs.models import Job

    with session_scope(api.app.state.session_factory) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="succeeded", finished_at=utcnow() - timedelta(days=days_ago))
        )


def test_deleting_a_job_deletes_its_artifact(api: TestClient, auth, settings, tmp_path) -> None:
    h = auth()
    job_id = _job(api, h, tmp_path)
    _fake_artifact(api, settings, job_id)
    r = api.delete(f"/v1/jobs/{job_id}", headers=h)
    assert r.status_code == 409 and "cancel it first" in r.json()["error"]["message"]
    _end(api, job_id)
    assert api.delete(f"/v1/jobs/{job_id}", headers=auth("other")).status_code == 404
    assert api.delete(f"/v1/jobs/{job_id}", headers=h).status_code == 204
    assert not (settings.artifacts_root / job_id).exists()
    assert api.get(f"/v1/jobs/{job_id}", headers=h).status_code == 404
    assert api.get(f"/v1/jobs/{job_id}/events", headers=h).status_code == 404
    assert (settings.artifacts_root / "secret.txt").exists()  # nothing else touched


def test_retention_removes_old_artifacts_and_keeps_the_job(
    api: TestClient, auth, settings, tmp_path
) -> None:
    from slimforge.worker.recovery import purge_artifacts

    h = auth()
    old, recent = _job(api, h, tmp_path), _job(api, h, tmp_path)
    for job_id, days in ((old, 10.0), (recent, 1.0)):
        _fake_artifact(api, settings, job_id)
        _end(api, job_id, days_ago=days)
    factory = api.app.state.session_factory
    assert purge_artifacts(settings=settings, session_factory=factory) == []  # no setting
    keep_week = settings.model_copy(update={"artifact_retention_days": 7.0})
    assert purge_artifacts(settings=keep_week, session_factory=factory) == [old]
    assert not (settings.artifacts_root / old).exists()
    assert (settings.artifacts_root / recent).exists()
    assert api.get(f"/v1/jobs/{old}", headers=h).json()["status"] == "succeeded"
    assert api.get(f"/v1/jobs/{old}/artifacts", headers=h).status_code == 404
    events = api.get(f"/v1/jobs/{old}/events", headers=h).json()["items"]
    assert any("kept 7 days" in e["message"] for e in events)


def test_a_failed_delete_commit_leaves_every_file(
    api: TestClient, auth, settings, tmp_path, monkeypatch
) -> None:
    """The rows go first: when the commit fails, the job and every file of its manifest stay."""
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    h = auth()
    job_id = _job(api, h, tmp_path)
    files = _fake_artifact(api, settings, job_id)
    _end(api, job_id)

    commit = Session.commit

    def failing_commit(self: Session) -> None:
        if self.deleted:  # the deletion's commit (not the key check's)
            raise OperationalError("COMMIT", {}, Exception("database is locked"))
        commit(self)

    with monkeypatch.context() as m:
        m.setattr(Session, "commit", failing_commit)
        # The API answers a database failure with 503 (retry later).
        assert api.delete(f"/v1/jobs/{job_id}", headers=h).status_code == 503
    listing = api.get(f"/v1/jobs/{job_id}/artifacts", headers=h).json()
    assert {f["path"] for f in listing["files"]} == set(files)
    for name, data in files.items():
        assert (settings.artifacts_root / job_id / name).read_bytes() == data


def test_files_left_by_an_interrupted_delete_are_swept(
    api: TestClient, auth, settings, tmp_path, monkeypatch
) -> None:
    """The store fails (or the process dies) after the commit: the job is gone, its files are
    removed by the workers' sweep, and nothing else in the store is touched."""
    from slimforge.app.artifacts.storage import LocalArtifactStore
    from slimforge.worker.recovery import purge_orphans

    h = auth()
    deleted, kept = _job(api, h, tmp_path), _job(api, h, tmp_path)
    for job_id in (deleted, kept):
        _fake_artifact(api, settings, job_id)
        _end(api, job_id)

    def crash(self: LocalArtifactStore, location: str) -> None:
        raise OSError("the process died here")

    with monkeypatch.context() as m:
        m.setattr(LocalArtifactStore, "delete", crash)
        assert api.delete(f"/v1/jobs/{deleted}", headers=h).status_code == 204
    assert api.get(f"/v1/jobs/{deleted}", headers=h).status_code == 404
    assert (settings.artifacts_root / deleted).exists()  # left behind by the crash
    factory = api.app.state.session_factory
    assert purge_orphans(settings=settings, session_factory=factory) == [deleted]
    assert not (settings.artifacts_root / deleted).exists()
    assert (settings.artifacts_root / kept / "config.json").exists()
    assert (settings.artifacts_root / "secret.txt").exists()
    assert purge_orphans(settings=settings, session_factory=factory) == []
