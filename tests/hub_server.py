"""A local stand-in for the Hugging Face Hub's file API, used through ``HF_ENDPOINT``.

It answers what ``huggingface_hub`` asks of the real Hub, the way the Hub does:

- ``GET /api/models/{repo}[/revision/{rev}]?blobs=true``: the repository's commit
  (``sha``) and ``siblings`` with ``size``, ``blobId`` and, for LFS files, ``lfs.sha256``;
  an unknown repository is ``401`` with ``X-Error-Code: RepoNotFound`` (the Hub hides
  private repositories that way), an unknown revision ``404 RevisionNotFound``.
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: a small (git) file is served directly
  with ``ETag`` = its git blob id and ``X-Repo-Commit``; an LFS file (weights) answers
  ``302`` to an absolute "CDN" URL with ``X-Linked-Etag`` (its sha256), ``X-Linked-Size``
  and ``X-Repo-Commit``; a missing file is ``404 EntryNotFound``.
- ``GET /cdn/{sha256}``: the LFS content, honouring ``Range: bytes=N-`` with ``206`` and
  ``Content-Range``, sent in 64 KiB writes.

Faults a test can switch on, per repository path: ``cut[path] = [n, ...]`` sends the full
``Content-Length`` but only ``n`` bytes of body, then drops the connection (one entry per
request, as a flaky network would); ``corrupt.add(path)`` serves content whose bytes
differ from the sha256 the metadata lists. ``token`` makes every repository private to
``Authorization: Bearer <token>``. Every request is recorded in ``requests``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".bin", ".gguf", ".onnx", ".safetensors")


@dataclass
class HubFile:
    path: str
    data: bytes

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def blob_id(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()


@dataclass
class HubRepo:
    """One repository at one commit; ``refs`` maps branch and tag names to it."""

    repo_id: str
    commit: str
    files: dict[str, HubFile] = field(default_factory=dict)
    refs: tuple[str, ...] = ("main",)

    @classmethod
    def from_folder(
        cls, repo_id: str, commit: str, folder: Path, refs: tuple[str, ...] = ("main",), prefix: str = ""
    ) -> HubRepo:
        files = {
            prefix + p.relative_to(folder).as_posix(): HubFile(
                prefix + p.relative_to(folder).as_posix(), p.read_bytes()
            )
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        return cls(repo_id, commit, files, refs)


class HubServer:
    """The stand-in on 127.0.0.1 (an ephemeral port); ``url`` is what ``HF_ENDPOINT`` takes."""

    def __init__(self, repos: list[HubRepo], token: str | None = None) -> None:
        self.repos = {r.repo_id: r for r in repos}
        self.token = token
        self.cut: dict[str, list[int]] = {}
        self.corrupt: set[str] = set()
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        # The Hub and its CDN are two origins (another port), as huggingface.co and
        # cdn-lfs.hf.co are: huggingface_hub follows redirects within the Hub only and
        # sends no token to the CDN.
        self._servers = [ThreadingHTTPServer(("127.0.0.1", 0), self._handler()) for _ in range(2)]
        for httpd in self._servers:
            httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def __enter__(self) -> HubServer:
        for httpd in self._servers:
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for httpd in self._servers:
            httpd.shutdown()
            httpd.server_close()

    def gets(self, suffix: str) -> list[dict]:
        """Recorded GET requests whose path ends with ``suffix``."""
        return [r for r in self.requests if r["method"] == "GET" and r["path"].endswith(suffix)]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _record(self) -> None:
                with hub._lock:
                    hub.requests.append(
                        {
                            "method": self.command,
                            "path": urlsplit(self.path).path,
                            "range": self.headers.get("Range"),
                            "authorization": self.headers.get("Authorization"),
                        }
                    )

            def _error(self, status: int, code: str, message: str) -> None:
                body = json.dumps({"error": message}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _authorized(self) -> bool:
                return hub.token is None or self.headers.get("Authorization") == f"Bearer {hub.token}"

            def _repo_rev(self, parts: list[str]) -> tuple[HubRepo | None, str]:
                repo = hub.repos.get("/".join(parts[:2]))
                return repo, (parts[2] if len(parts) > 2 else "main")

            def do_HEAD(self) -> None:
                self._serve()

            def do_GET(self) -> None:
                self._serve()

            def _serve(self) -> None:
                self._record()
                path = unquote(urlsplit(self.path).path)
                parts = [p for p in path.split("/") if p]
                if parts[:2] == ["api", "models"]:
                    return self._model_info(parts[2:])
                if parts[:1] == ["cdn"] and len(parts) == 3:
                    return self._cdn(parts[1], parts[2])
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo = hub.repos.get("/".join(parts[:2]))
                    return self._resolve(repo, parts[3], "/".join(parts[4:]))
                self._error(404, "EntryNotFound", "not found")

            def _model_info(self, parts: list[str]) -> None:
                repo = hub.repos.get("/".join(parts[:2]))
                if repo is None or not self._authorized():
                    return self._error(401, "RepoNotFound", "Repository not found")
                rev = parts[3] if len(parts) >= 4 and parts[2] == "revision" else "main"
                if rev != repo.commit and rev not in repo.refs:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                siblings = []
                for f in repo.files.values():
                    entry = {"rfilename": f.path, "size": len(f.data), "blobId": f.blob_id}
                    if f.lfs:
                        entry["lfs"] = {"sha256": f.sha256, "size": len(f.data), "pointerSize": 134}
                    siblings.append(entry)
                body = json.dumps(
                    {
                        "_id": repo.repo_id,
                        "id": repo.repo_id,
                        "modelId": repo.repo_id,
                        "sha": repo.commit,
                        "private": hub.token is not None,
                        "gated": False,
                        "disabled": False,
                        "tags": [],
                        "downloads": 0,
                        "likes": 0,
                        "siblings": siblings,
                        "lastModified": "2026-11-01T00:00:00.000Z",
                        "createdAt": "2026-01-01T00:00:00.000Z",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _resolve(self, repo: HubRepo | None, rev: str, rel: str) -> None:
                if repo is None or not self._authorized():
                    return self._error(401, "RepoNotFound", "Repository not found")
                if rev != repo.commit and rev not in repo.refs:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                f = repo.files.get(rel)
                if f is None:
                    return self._error(404, "EntryNotFound", f"{rel} does not exist at {rev}")
                if f.lfs:  # weights live on the CDN: an absolute redirect, metadata in X-Linked-*
                    self.send_response(302)
                    self.send_header(
                        "Location",
                        f"{hub.cdn_url}/cdn/{f.sha256}/{repo.repo_id.replace('/', '--')}--{rel.replace('/', '--')}",
                    )
                    self.send_header("X-Repo-Commit", repo.commit)
                    self.send_header("X-Linked-Etag", f'"{f.sha256}"')
                    self.send_header("X-Linked-Size", str(len(f.data)))
                    self.send_header("ETag", f'"{f.blob_id}"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._body(f, self._content(repo, rel), {"X-Repo-Commit": repo.commit, "ETag": f'"{f.blob_id}"'}, rel)

            def _cdn(self, sha256: str, name: str) -> None:
                for repo in hub.repos.values():
                    for rel, f in repo.files.items():
                        if f.lfs and f.sha256 == sha256:
                            return self._body(
                                f, self._content(repo, rel), {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"}, rel
                            )
                self._error(404, "EntryNotFound", "no such object")

            def _content(self, repo: HubRepo, rel: str) -> bytes:
                data = repo.files[rel].data
                if rel in hub.corrupt:  # same length, one byte flipped half-way
                    i = len(data) // 2
                    data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
                return data

            def _body(self, f: HubFile, data: bytes, headers: dict[str, str], rel: str) -> None:
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and self.command == "GET":
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if self.command == "HEAD":
                    return
                limit = None
                with hub._lock:
                    if hub.cut.get(rel):
                        limit = hub.cut[rel].pop(0)
                view = memoryview(data)[start:]
                if limit is not None:
                    view = view[:limit]
                for i in range(0, len(view), 65536):
                    self.wfile.write(view[i : i + 65536])
                self.wfile.flush()
                if limit is not None:  # the connection drops mid-body, as a flaky network does
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        return Handler
