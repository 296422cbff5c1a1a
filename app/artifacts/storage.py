"""Artifact storage. The embedded and single-host mode keeps artifacts in a local folder."""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["LocalArtifactStore"]


class LocalArtifactStore:
    """Artifacts as folders ``<root>/<job id>/`` on a local (or shared) file system."""

    def __init__(self, root: Path):
        self.root = root

    def job_dir(self, job_id: str) -> Path:
        """Where a job's artifact folder goes; the exporter writes it atomically."""
        return self.root / job_id

    def file_path(self, location: str, relative: str) -> Path | None:
        """The absolute path of one artifact file, or None if it leaves the artifact folder."""
        base = (self.root / location).resolve()
        target = (base / relative).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            return None
        return target

    def delete(self, location: str) -> None:
        folder = (self.root / location).resolve()
        if folder.is_relative_to(self.root.resolve()) and folder != self.root.resolve():
            shutil.rmtree(folder, ignore_errors=True)
