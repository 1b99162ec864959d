"""A local stand-in for the Hugging Face Hub (stdlib ``http.server`` in a thread).

It serves what huggingface-hub 2.x asks for, in the Hub's layout:

- ``GET /api/models/{repo}[/revision/{rev}]``: repo info with ``sha`` and ``siblings`` (sizes, lfs);
- ``GET /api/models/{repo}/tree/{rev}``: the recursive file listing (``snapshot_download``);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: ``ETag``, ``X-Repo-Commit``, ``Content-Length``,
  and ``Range`` requests answered with 206 (``get_safetensors_metadata`` reads a header window);
- the Hub's error answers: 404 / 401 with ``X-Error-Code: RepoNotFound``, 401 ``GatedRepo`` on
  a gated repo's files, ``EntryNotFound`` for a missing file.

Every request is logged with the body bytes sent, so a test can prove which bytes were fetched.
A file can be held mid-body (``hold``) until the test releases it, so a download is reliably
"in flight" while the test acts.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

PIECE = 16 * 1024
"""Bytes written per socket write (so a held file can stop part-way)."""


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    gated: bool = False
    """Repo info is public, file downloads answer 401 GatedRepo (the Hub, without an accepted token)."""
    private: bool = False
    """Everything answers 401 RepoNotFound (the Hub, for a private repo and no token)."""

    @property
    def sha(self) -> str:
        digest = hashlib.sha1()
        for name in sorted(self.files):
            digest.update(name.encode() + hashlib.sha1(self.files[name]).digest())
        return digest.hexdigest()

    @staticmethod
    def from_folder(folder: Path, **kwargs) -> "FakeRepo":
        return FakeRepo({p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}, **kwargs)


@dataclass
class Logged:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    log: list[Logged] = field(default_factory=list)
    hold: dict[str, int] = field(default_factory=dict)
    """File name -> bytes to send before waiting for ``release`` (GETs without a Range only)."""
    release: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)
    """Set when a held body has sent its first part and is waiting."""

    def __post_init__(self):
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0
        self._connections: set[socket.socket] = set()
        hub = self

        class Handler(_Handler):
            fake = hub

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-hub", daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        """Down for real: no new connections, and the kept-alive ones are closed."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def connected(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def record(self, entry: Logged) -> None:
        with self._lock:
            self.log.append(entry)

    def enter(self) -> None:
        with self._lock:
            self._active += 1

    def leave(self) -> None:
        with self._lock:
            self._active -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until no request is being answered (a client may finish reading before the server logs)."""
        with self._lock:
            if not self._idle.wait_for(lambda: self._active == 0, timeout):
                raise TimeoutError("the fake hub is still answering a request")

    def bytes_sent(self, file_name: str) -> int:
        """Body bytes of ``file_name`` sent by GET (any repo)."""
        self.wait_idle()
        with self._lock:
            return sum(e.body_bytes for e in self.log if e.method == "GET" and e.path.endswith("/" + file_name))

    def full_gets(self, file_name: str) -> int:
        """GETs of ``file_name`` without a Range (whole-file downloads)."""
        self.wait_idle()
        with self._lock:
            return sum(1 for e in self.log if e.method == "GET" and e.path.endswith("/" + file_name) and not e.range)


# model and dataset repos share one namespace here (the tests never give both the same name)
_API = re.compile(r"^/api/(?:models|datasets)/([^/]+/[^/]+?)(?:/revision/([^/]+))?/?$")
_TREE = re.compile(r"^/api/(?:models|datasets)/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?$")
_RESOLVE = re.compile(r"^/(?:datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeHub

    def log_message(self, *args) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.fake.connected(self.connection, True)

    def finish(self) -> None:
        self.fake.connected(self.connection, False)
        super().finish()

    def do_HEAD(self) -> None:
        self._counted(head=True)

    def do_GET(self) -> None:
        self._counted(head=False)

    def _counted(self, head: bool) -> None:
        self.fake.enter()
        try:
            self._serve(head)
        finally:
            self.fake.leave()

    # -- answers -----------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)
        self._logged(status, 0 if head else len(body))

    def _logged(self, status: int, n: int) -> None:
        self.fake.record(Logged(self.command, unquote(urlsplit(self.path).path), self.headers.get("Range"), status, n))

    def _error(self, status: int, code: str, head: bool, repo: FakeRepo | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json"}
        if repo is not None:
            headers["X-Repo-Commit"] = repo.sha
        self._send(status, json.dumps({"error": code}).encode(), headers, head)

    def _json(self, data) -> None:
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _serve(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        for pattern, kind in ((_TREE, "tree"), (_API, "api"), (_RESOLVE, "resolve")):
            match = pattern.match(path)
            if match:
                break
        else:
            return self._error(404, "NotFound", head)
        repo_id, revision = match.group(1), match.group(2) or "main"
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", head)
        if repo.private:
            return self._error(401, "RepoNotFound", head)
        if revision not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", head, repo)
        if kind == "api":
            return self._json({"id": repo_id, "sha": repo.sha, "private": False, "gated": repo.gated and "auto",
                               "siblings": [_sibling(n, b) for n, b in repo.files.items()]})
        if kind == "tree":
            return self._json([_tree_entry(n, b) for n, b in repo.files.items()])
        if repo.gated:
            return self._error(401, "GatedRepo", head, repo)
        name = match.group(3)
        if name not in repo.files:
            return self._error(404, "EntryNotFound", head, repo)
        self._file(repo, name, repo.files[name], head)

    def _file(self, repo: FakeRepo, name: str, data: bytes, head: bool) -> None:
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        start, end, status = 0, len(data) - 1, 200
        wanted = self.headers.get("Range")
        if wanted and (m := _RANGE.match(wanted.strip())):
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start:end + 1]
        headers["Content-Length"] = str(len(body))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            return self._logged(status, 0)
        hold_at = self.fake.hold.get(name) if status == 200 else None
        sent = 0
        try:
            for offset in range(0, len(body), PIECE):
                if hold_at is not None and sent >= hold_at and not self.fake.release.is_set():
                    self.wfile.flush()
                    self.fake.held.set()
                    self.fake.release.wait(60)
                self.wfile.write(body[offset:offset + PIECE])
                sent += len(body[offset:offset + PIECE])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up (a cancelled download)
        self._logged(status, sent)


def _sibling(name: str, data: bytes) -> dict:
    """A ``siblings`` entry of the repo info (``?blobs=true``)."""
    entry = {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest()}
    if name.endswith((".safetensors", ".parquet")):
        entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


def _tree_entry(name: str, data: bytes) -> dict:
    """An entry of the tree listing."""
    entry = {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
    if name.endswith((".safetensors", ".parquet")):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry
