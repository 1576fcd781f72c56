"""Place a model under ``models/NAME/``: from a Hugging Face hub, or from a folder copied
over by hand (air-gapped sites).

Either way the files are first written to ``models/.partial/NAME.PID/``, every file is
checked (sha256 against what the hub reports, the catalog pins, or the source folder's
``SHA256SUMS``), and only then is the folder renamed into place and recorded in
``models/manifest.json``. A failed or cut pull raises :class:`PullError` and leaves
``models/NAME`` as it was (absent, or the previous good copy).

Downloads go through ``huggingface_hub`` (its progress bars, its retries and in-transfer
resume with HTTP ``Range``), so ``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE``
work as that library documents (https://huggingface.co/docs/huggingface_hub/package_reference/environment_variables).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .manifest import Manifest, git_blob_sha1, read_sums, sha256_file, write_sums

log = logging.getLogger("bridge.models")

PARTIAL = ".partial"


class PullError(Exception):
    """A pull failed; the message is one line that says why and what was (not) placed."""


@dataclass
class Placed:
    """A model placed under ``models/``.

    Attributes:
        name: its folder name under the models root.
        folder: ``root/name``.
        repo, revision: where it came from (``revision`` is the resolved commit for a hub pull).
        files: ``{path relative to folder: {"size": bytes, "sha256": hex}}``.
        checked: how the files were checked: ``hub`` (the hub's sha256 / git blob id),
            ``pinned`` (the catalog's sha256), ``sums`` (the source folder's SHA256SUMS),
            or ``none`` (nothing to check against; said on stderr).
    """

    name: str
    folder: Path
    repo: str | None
    revision: str | None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    checked: str = "hub"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _staging(root: Path, name: str) -> Path:
    folder = root / PARTIAL / f"{name}.{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _place(root: Path, name: str, staging: Path, placed: Placed, source: str) -> Placed:
    """Rename ``staging`` to ``root/name`` (replacing an older copy) and record it."""
    shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's local_dir bookkeeping
    write_sums(staging, placed.files)
    final = root / name
    old = None
    if final.exists():
        old = root / PARTIAL / f"{name}.old.{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    Manifest(root).record(
        name,
        {
            "repo": placed.repo,
            "revision": placed.revision,
            "source": source,
            "checked": placed.checked,
            "placed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": placed.files,
        },
    )
    placed.folder = final
    return placed


def pull_hub(
    root: str | Path,
    name: str,
    repo: str,
    revision: str | None,
    patterns: list[str],
    pinned: dict[str, str] | None = None,
) -> Placed:
    """Download the files of ``repo`` at ``revision`` that match ``patterns`` into ``root/name``.

    Args:
        root: the models folder (``models/``).
        name: the folder to place them in.
        repo: ``owner/name`` on the hub ``HF_ENDPOINT`` names.
        revision: a commit, branch or tag (``None``: the default branch); the commit it
            resolves to is what is downloaded and recorded.
        patterns: fnmatch patterns over the repository's paths; each must match a file.
        pinned: sha256 the catalog publishes for some paths; the hub must agree.

    Raises:
        PullError: offline mode, an unknown repository, revision or file, a refused token,
            a download that failed after huggingface_hub's retries, or a file whose
            sha256 is not the expected one. Nothing is placed then.
    """
    from huggingface_hub import HfApi, constants, hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    root = Path(root)
    where = f"{repo}@{revision or 'default branch'}"
    if constants.HF_HUB_OFFLINE:
        raise PullError(f"{where}: offline mode (HF_HUB_OFFLINE=1): copy the files over and use --from DIR")
    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    except RevisionNotFoundError:
        raise PullError(f"{where}: no such revision on {constants.ENDPOINT}") from None
    except GatedRepoError:
        raise PullError(f"{where}: the repository is gated: accept its terms on the hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise PullError(f"{repo}: no such repository on {constants.ENDPOINT} (or HF_TOKEN may not read it)") from None
    except OfflineModeIsEnabled:
        raise PullError(f"{where}: offline mode: use --from DIR") from None
    except HfHubHTTPError as exc:
        raise PullError(f"{where}: the hub answered {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - connection refused, DNS, TLS: one line for the operator
        raise PullError(f"{where}: cannot reach {constants.ENDPOINT}: {_first_line(exc)}") from None
    commit = info.sha
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    chosen: list[str] = []
    for pattern in patterns:
        matched = sorted(p for p in siblings if fnmatch.fnmatch(p, pattern))
        if not matched:
            raise PullError(f"{repo}@{commit}: no file matches {pattern!r} (missing file); nothing was placed")
        chosen += [p for p in matched if p not in chosen]

    staging = _staging(root, name)
    placed = Placed(name, root / name, repo, commit, checked="pinned" if pinned else "hub")
    try:
        for rel in chosen:
            sibling = siblings[rel]
            try:
                path = Path(hf_hub_download(repo_id=repo, filename=rel, revision=commit, local_dir=staging))
            except Exception as exc:  # noqa: BLE001 - huggingface_hub has retried and resumed already
                raise PullError(
                    f"{repo}@{commit}: download of {rel} failed: {_first_line(exc)}; nothing was placed"
                ) from None
            digest = sha256_file(path)
            expected = sibling.lfs.sha256 if sibling.lfs else None
            if pinned and rel in pinned:
                if expected and expected != pinned[rel]:
                    raise PullError(
                        f"{rel}: the hub lists sha256 {expected}, the catalog pins {pinned[rel]}; nothing was placed"
                    )
                expected = pinned[rel]
            if expected and digest != expected:
                raise PullError(f"{rel}: sha256 mismatch: got {digest}, expected {expected}; nothing was placed")
            if not sibling.lfs and sibling.blob_id and git_blob_sha1(path) != sibling.blob_id:
                raise PullError(
                    f"{rel}: content does not match the hub's blob id {sibling.blob_id}; nothing was placed"
                )
            placed.files[rel] = {"size": path.stat().st_size, "sha256": digest}
        return _place(root, name, staging, placed, "hub")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def pull_dir(
    root: str | Path,
    name: str,
    source: str | Path,
    patterns: list[str],
    pinned: dict[str, str] | None = None,
    repo: str | None = None,
    revision: str | None = None,
) -> Placed:
    """Copy the files matching ``patterns`` from ``source`` (a folder copied over by hand)
    into ``root/name``, without any network.

    A pattern matches a path relative to ``source`` (the repository layout) or, failing
    that, a file name anywhere below it (a flat copy); the file keeps the pattern's
    repository path. Each file is checked against ``pinned`` (the catalog's sha256), else
    ``source/SHA256SUMS`` (what a pull writes into every model folder); with neither,
    it is placed unchecked and the manifest says so.

    Raises:
        PullError: ``source`` is not a folder, a pattern matches nothing (missing file),
            or a file's sha256 is not the expected one. Nothing is placed then.
    """
    root, source = Path(root), Path(source)
    if not source.is_dir():
        raise PullError(f"--from {source}: not a folder")
    sums = read_sums(source)
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    chosen: list[tuple[str, Path]] = []
    for pattern in patterns:
        matched = [
            (p.relative_to(source).as_posix(), p)
            for p in files
            if fnmatch.fnmatch(p.relative_to(source).as_posix(), pattern)
        ]
        if not matched:  # a flat copy: match the file name; a literal pattern keeps its repository path
            literal = not any(c in pattern for c in "*?[")
            base = pattern.rsplit("/", 1)[-1]
            matched = [(pattern if literal else p.name, p) for p in files if fnmatch.fnmatch(p.name, base)]
        if not matched:
            raise PullError(f"--from {source}: no file matches {pattern!r} (missing file); nothing was placed")
        chosen += [m for m in matched if m[0] not in [c[0] for c in chosen]]

    staging = _staging(root, name)
    checked = set()
    placed = Placed(name, root / name, repo, revision)
    try:
        for rel, src in chosen:
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            digest = sha256_file(target)
            src_rel = src.relative_to(source).as_posix()
            if pinned and rel in pinned:
                expected, how = pinned[rel], "pinned"
            else:
                expected, how = sums.get(src_rel) or sums.get(rel) or sums.get(src.name), "sums"
            if expected is None:
                how = "none"
            elif digest != expected:
                raise PullError(
                    f"--from {source}: {src_rel}: sha256 mismatch: got {digest}, expected {expected}; nothing was placed"
                )
            checked.add(how)
            placed.files[rel] = {"size": target.stat().st_size, "sha256": digest}
        placed.checked = "none" if "none" in checked else ("pinned" if checked == {"pinned"} else "sums")
        return _place(root, name, staging, placed, f"dir:{source.resolve()}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
