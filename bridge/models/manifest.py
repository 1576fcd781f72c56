"""``models/manifest.json``: what ``bridge models pull`` placed, from where, and each file's sha256.

Shape::

    {"models": {"whisper-small.en": {
        "repo": "Systran/faster-whisper-small.en", "revision": "<commit>",
        "source": "hub" | "dir:/media/usb/whisper", "placed_at": "2026-11-25T08:00:00+00:00",
        "files": {"model.bin": {"size": 483546902, "sha256": "<hex>"}, ...}}}}

Each placed folder also gets a ``SHA256SUMS`` file (``sha256sum`` format), so a folder
copied to an air-gapped machine carries its own check (``bridge models pull --from``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git object id of the file's content (``sha1("blob <size>\\0" + content)``): what
    the Hub reports as ``blobId`` / ``ETag`` for a file that is not in LFS."""
    digest = hashlib.sha1()
    digest.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_sums(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from ``folder/SHA256SUMS``; empty if there is none."""
    sums: dict[str, str] = {}
    path = folder / SUMS
    if not path.is_file():
        return sums
    for line in path.read_text().splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*").removeprefix("./")] = parts[0].lower()
    return sums


def write_sums(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    """Write ``folder/SHA256SUMS`` for ``files`` (``{path: {"sha256": ...}}``)."""
    (folder / SUMS).write_text("".join(f"{info['sha256']}  {rel}\n" for rel, info in sorted(files.items())))


class Manifest:
    """The manifest under ``root`` (``models/`` by default). Writes are atomic (a temporary
    file renamed over the old one) and serialized between processes with ``flock``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / MANIFEST

    def read(self) -> dict[str, dict[str, Any]]:
        """``{name: entry}``; empty when there is no manifest yet."""
        try:
            return json.loads(self.path.read_text()).get("models", {})
        except FileNotFoundError:
            return {}

    def get(self, name: str) -> dict[str, Any] | None:
        return self.read().get(name)

    @contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".manifest.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def record(self, name: str, info: dict[str, Any]) -> None:
        """Set the entry for ``name`` (replacing an older one)."""
        with self._locked():
            models = self.read()
            models[name] = info
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".manifest.")
            with os.fdopen(fd, "w") as f:
                json.dump({"models": models}, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)

    def present(self, name: str) -> bool:
        """Recorded, and every recorded file is in ``root/name`` with its recorded size
        (cheap: no hashing; ``verify`` hashes)."""
        info = self.get(name)
        if not info:
            return False
        folder = self.root / name
        for rel, meta in info.get("files", {}).items():
            path = folder / rel
            if not path.is_file() or path.stat().st_size != meta.get("size"):
                return False
        return True

    def verify(self, name: str) -> list[str]:
        """Problems with ``root/name`` against the manifest (missing files, wrong sha256); empty = good."""
        info = self.get(name)
        if not info:
            return [f"{name} is not in {self.path}"]
        problems = []
        for rel, meta in info.get("files", {}).items():
            path = self.root / name / rel
            if not path.is_file():
                problems.append(f"{rel}: missing")
            elif sha256_file(path) != meta["sha256"]:
                problems.append(f"{rel}: sha256 differs from the manifest")
        return problems
