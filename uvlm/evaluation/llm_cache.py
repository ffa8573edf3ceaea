"""The LLM answer cache (SQLite, keyed on everything that changes an answer) and the per-call log."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def cache_key(base_url: str, model: str, prompt_version: str, messages: Sequence[Mapping[str, str]],
              params: Mapping[str, Any]) -> str:
    """sha256 over everything that changes the answer (not timeouts/retries)."""
    payload = {"base_url": base_url.rstrip("/"), "model": model, "prompt_version": prompt_version,
               "messages": list(messages), "params": dict(params)}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class LabelCache:
    """SQLite cache of validated answers; one connection behind a lock, so threads can share it.

    SQLite's own file locking also keeps concurrent processes on one file consistent.
    """

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=60, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                             "created TEXT NOT NULL)")

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)",
                             (key, json.dumps(value, sort_keys=True), now_utc()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CallLog:
    """Append-only JSONL log, one row per attempt; rows are written whole under a lock."""

    def __init__(self, path: str | Path, secret: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._secret = secret

    def write(self, row: Mapping[str, Any]) -> None:
        line = json.dumps(row, sort_keys=True)
        if self._secret and self._secret in line:  # defence in depth; rows hold no server text
            line = line.replace(self._secret, "***")
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
