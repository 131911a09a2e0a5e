"""The judgment cache: an append-only JSONL file of judge responses keyed by a hash of the request.

Every record is written with one ``write`` and made durable (flush + fsync) before the next request is
answered, so a job killed at any moment loses at most the record being written; that torn last line is
cut off on reload. A rerun finds every response here and makes no backend call; an interrupted job
resumes with the requests that have no record yet.

Several jobs may share one cache file (the workflow keeps one per judge and benchmark, for all runs): each
append and the torn-line repair on load hold an exclusive ``flock`` on the file, so records never interleave
and a reader never cuts off a line that another process is still writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Sequence

from sftlab.io import DataError

log = logging.getLogger(__name__)


def request_key(judge_id: str, messages: Sequence[dict], decoding: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of (judge, prompt messages, decoding parameters)."""
    payload = json.dumps(
        {"judge": judge_id, "messages": list(messages), "decoding": decoding},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgmentCache:
    """Responses by request key, backed by ``path`` (created on first write)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._records: dict[str, dict] = {}
        self._lock = threading.Lock()
        if self.path.exists():
            self._load()

    @contextlib.contextmanager
    def _locked(self, mode: str):
        """The cache file opened in ``mode`` under an exclusive lock shared with every other process."""
        with open(self.path, mode) as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _load(self) -> None:
        with self._locked("r+b") as fh:
            data = fh.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                # writers hold the lock until their line is complete: a tail without a newline is a crashed write
                log.warning("%s: dropping a torn last record (%d bytes) left by an interrupted job", self.path, len(data) - end)
                fh.truncate(end)
                fh.flush()
                os.fsync(fh.fileno())
        for lineno, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{self.path}:{lineno}: invalid JSON in the judgment cache ({exc.msg})") from None
            self._records[record["key"]] = record

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> dict | None:
        return self._records.get(key)

    def put(self, record: dict) -> None:
        """Append ``record`` (which carries its ``key``) and make it durable before returning."""
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked("ab") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            self._records[record["key"]] = record
