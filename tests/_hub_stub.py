"""A real HTTP server on 127.0.0.1 answering the two Hugging Face hub API calls the preflight makes: a repository's
info (at a revision: ``/api/{models,datasets}/{repo}[/revision/{rev}]``) and its access check (``.../auth-check``),
with the hub's error codes (``X-Error-Code``: RepoNotFound, RevisionNotFound, GatedRepo) that huggingface_hub turns
into its exceptions."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class Repo:
    revisions: dict[str, str]  # branch, tag or commit -> commit
    gated: bool = False
    granted: set[str] = field(default_factory=set)  # tokens of accounts that accepted the licence


class HubStub:
    def __init__(self, repos: dict[tuple[str, str], Repo]):
        """``repos``: (``model`` or ``dataset``, repo id) -> Repo."""
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict, error_code: str | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if error_code:
                    self.send_header("X-Error-Code", error_code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                m = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)(?:/revision/(.+)|/(auth-check))?", self.path)
                if not m:
                    return self._send(404, {"error": f"no route {self.path}"})
                kind, repo_id, revision, auth = m.group(1)[:-1], m.group(2), m.group(3), m.group(4)
                repo = stub.repos.get((kind, repo_id))
                if repo is None:
                    return self._send(404, {"error": "Repository not found"}, "RepoNotFound")
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if auth:
                    if repo.gated and token not in repo.granted:
                        return self._send(403, {"error": "Access to this gated repo is restricted"}, "GatedRepo")
                    return self._send(200, {})
                commit = repo.revisions.get(unquote(revision or "main"))
                if commit is None:
                    return self._send(404, {"error": "Invalid rev id"}, "RevisionNotFound")
                self._send(200, {"id": repo_id, "sha": commit, "gated": "manual" if repo.gated else False,
                                 "private": False})

        self.repos = repos
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "HubStub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
