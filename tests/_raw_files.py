"""A local stand-in for raw.githubusercontent.com: serves a folder's files at ``{base_url}/{commit}/{path}``."""

from __future__ import annotations

import contextlib
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Mapping


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def raw_files(served: Path, commit: str, files: Mapping[str, Path]) -> Iterator[str]:
    """Serve ``files`` (repository path → local file) as the repository holds them at ``commit``; yields the base URL."""
    for repo_path, local in files.items():
        target = served / commit / repo_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(local, target)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
