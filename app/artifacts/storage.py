"""Artifact storage behind one interface: a local folder (embedded mode, one host) or
S3-compatible object storage (production: API replicas and workers on other machines).

Writes are atomic for readers: the local store fills a temporary folder and renames it into
place; the S3 store uploads under a fresh prefix (``<job>/<random>/``) that the database points
at only once every object is there, so nobody ever reads a half-written artifact. Every file
carries a sha256 in the manifest; :meth:`ArtifactStore.download` checks it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from slimforge.app.settings import Settings

__all__ = [
    "ArtifactStore",
    "ChecksumMismatch",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "make_store",
]

CHUNK = 1 << 20


# Every job id starts with this (slimforge.app.jobs.models); other names in a store are not
# artifacts.
JOB_PREFIX = "job_"


class ChecksumMismatch(RuntimeError):
    """A stored file's bytes do not match the sha256 of the manifest."""


class ArtifactStore(Protocol):
    """Where finished artifacts live. ``location`` is the store's name for one artifact."""

    def put_folder(self, job_id: str, folder: Path) -> str:
        """Store every file of ``folder`` (which is consumed) atomically; its location."""
        ...

    def local_path(self, location: str, path: str) -> Path | None:
        """A file on this machine's disk, when the store has one (fast path for serving)."""
        ...

    def size(self, location: str, path: str) -> int | None:
        """The file's size, or None when it is not stored."""
        ...

    def read(
        self, location: str, path: str, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (inclusive; None: to the end) of one file, in chunks."""
        ...

    def download(self, location: str, files: list[dict[str, Any]], dest: Path) -> None:
        """Copy the listed files to ``dest``, checking each sha256 (ChecksumMismatch)."""
        ...

    def delete(self, location: str) -> None:
        """Remove the artifact (no error when it is already gone)."""
        ...

    def job_ids(self) -> set[str]:
        """The jobs that have files in the store (to find those whose job row is gone)."""
        ...


def _safe(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _download_checked(
    store: ArtifactStore, location: str, files: list[dict[str, Any]], dest: Path
) -> None:
    for entry in files:
        target = dest / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with target.open("wb") as f:
            for chunk in store.read(location, entry["path"]):
                digest.update(chunk)
                f.write(chunk)
        if digest.hexdigest() != entry["sha256"]:
            raise ChecksumMismatch(f"artifact file '{entry['path']}' does not match its sha256")


class LocalArtifactStore:
    """Artifacts as folders ``<root>/<job id>/`` on a local (or shared) file system."""

    def __init__(self, root: Path):
        self.root = root

    def job_dir(self, job_id: str) -> Path:
        """Where a job's artifact folder goes."""
        return self.root / job_id

    def put_folder(self, job_id: str, folder: Path) -> str:
        dest = self.job_dir(job_id)
        if folder.resolve() == dest.resolve():
            return job_id  # already in place (written there atomically by the exporter)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{job_id}-{uuid.uuid4().hex[:8]}"
        shutil.move(str(folder), tmp)  # a rename on one file system, a copy across
        if dest.exists():  # a previous attempt's artifact: replace it
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        return job_id

    def local_path(self, location: str, path: str) -> Path | None:
        if not _safe(path):
            return None
        base = (self.root / location).resolve()
        target = (base / path).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            return None
        return target

    def size(self, location: str, path: str) -> int | None:
        found = self.local_path(location, path)
        return None if found is None else found.stat().st_size

    def read(
        self, location: str, path: str, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        found = self.local_path(location, path)
        if found is None:
            raise FileNotFoundError(path)
        remaining = None if end is None else end - start + 1
        with found.open("rb") as f:
            f.seek(start)
            while remaining is None or remaining > 0:
                chunk = f.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def download(self, location: str, files: list[dict[str, Any]], dest: Path) -> None:
        _download_checked(self, location, files, dest)

    def delete(self, location: str) -> None:
        folder = (self.root / location).resolve()
        if folder.is_relative_to(self.root.resolve()) and folder != self.root.resolve():
            shutil.rmtree(folder, ignore_errors=True)

    def job_ids(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {p.name for p in self.root.iterdir() if p.name.startswith(JOB_PREFIX) and p.is_dir()}


class S3ArtifactStore:
    """Artifacts as objects ``<prefix><job id>/<random>/<path>`` in an S3-compatible bucket.

    ``client`` is a boto3 S3 client (injected: tests point it at a local server).
    """

    def __init__(self, client: Any, bucket: str, prefix: str = ""):
        self.client, self.bucket, self.prefix = client, bucket, prefix

    def _key(self, location: str, path: str) -> str:
        if not _safe(path):
            raise FileNotFoundError(path)
        return f"{self.prefix}{location}/{path}"

    def put_folder(self, job_id: str, folder: Path) -> str:
        location = f"{job_id}/{uuid.uuid4().hex[:12]}"
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = file.relative_to(folder).as_posix()
            with file.open("rb") as body:
                # The server checks the digest as it receives the bytes.
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(location, relative),
                    Body=body,
                    ChecksumAlgorithm="SHA256",
                )
        shutil.rmtree(folder, ignore_errors=True)
        return location

    def local_path(self, location: str, path: str) -> Path | None:
        return None

    def size(self, location: str, path: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(location, path))
        except FileNotFoundError:
            return None
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    def read(
        self, location: str, path: str, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        extra = (
            {}
            if start == 0 and end is None
            else {"Range": f"bytes={start}-{'' if end is None else end}"}
        )
        obj = self.client.get_object(Bucket=self.bucket, Key=self._key(location, path), **extra)
        body = obj["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def download(self, location: str, files: list[dict[str, Any]], dest: Path) -> None:
        _download_checked(self, location, files, dest)

    def delete(self, location: str) -> None:
        # Every attempt of the job lives under "<job>/": remove them all.
        job_prefix = f"{self.prefix}{location.split('/')[0]}/"
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=job_prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    def job_ids(self) -> set[str]:
        found: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(self.prefix) :].rstrip("/")
                if name.startswith(JOB_PREFIX):
                    found.add(name)
        return found


def make_store(settings: Settings) -> ArtifactStore:
    """The store the settings name: ``s3://bucket/prefix`` or a local folder."""
    url = settings.artifact_store_url
    if url.startswith("s3://"):
        import boto3  # only deployments with S3 need it installed

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region or None,
        )
        return S3ArtifactStore(client, bucket, prefix.rstrip("/") + "/" if prefix else "")
    return LocalArtifactStore(settings.artifacts_root)
