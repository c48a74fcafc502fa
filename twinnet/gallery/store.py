"""The gallery's source of truth: identities, their metadata and template vectors, in SQLite.

SQLite in WAL mode with ``synchronous=FULL``: a write that returned is on disk, and a process
killed mid-write leaves the last committed state. Every change bumps ``generation``, which the
vector index (derived data, rebuilt when stale) records.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from twinnet.errors import DataError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    id TEXT PRIMARY KEY, metadata TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    vector BLOB NOT NULL,
    source TEXT
);
CREATE INDEX IF NOT EXISTS templates_by_identity ON templates(identity);
"""


class TemplateStore:
    """Thread-safe SQLite store; one writer at a time (a lock), readers see committed data."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise DataError(f"{self.path}: not a readable gallery database ({err})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES('generation', '1') "
                    "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- meta -------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, values: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for k, v in values.items():
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (k, json.dumps(v)),
                )
            self._db.execute("COMMIT")

    @property
    def generation(self) -> int:
        value = self.get_meta("generation")
        return int(value) if value is not None else 0

    # -- writes -----------------------------------------------------------------------------------

    def add(
        self, identity: str, vectors: np.ndarray, metadata: dict[str, Any] | None, replace: bool,
        sources: list[str] | None = None,
    ) -> tuple[list[int], list[int]]:  # fmt: skip
        """Add templates (and the identity if new) in one transaction. Returns (new rowids,
        removed rowids); ``replace`` drops the identity's previous templates."""
        now = time.time()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.transaction() as db:
            removed: list[int] = []
            exists = db.execute("SELECT metadata FROM identities WHERE id = ?", (identity,)).fetchone()
            if exists is None:
                db.execute(
                    "INSERT INTO identities(id, metadata, created, updated) VALUES(?, ?, ?, ?)",
                    (identity, json.dumps(metadata or {}), now, now),
                )
            else:
                merged = json.loads(exists[0]) if not replace else {}
                merged.update(metadata or {})
                db.execute(
                    "UPDATE identities SET metadata = ?, updated = ? WHERE id = ?", (json.dumps(merged), now, identity)
                )
                if replace:
                    removed = [r[0] for r in db.execute("SELECT rowid FROM templates WHERE identity = ?", (identity,))]
                    db.execute("DELETE FROM templates WHERE identity = ?", (identity,))
            rowids = []
            for i, v in enumerate(vectors):
                cur = db.execute(
                    "INSERT INTO templates(identity, vector, source) VALUES(?, ?, ?)",
                    (identity, v.tobytes(), sources[i] if sources else None),
                )
                assert cur.lastrowid is not None  # an INSERT always sets it
                rowids.append(cur.lastrowid)
        return rowids, removed

    def add_many(self, identities: list[str], vectors: np.ndarray) -> list[int]:
        """Bulk enrolment: one template per row, identities created as needed, one transaction."""
        now = time.time()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO identities(id, metadata, created, updated) VALUES(?, '{}', ?, ?)",
                ((i, now, now) for i in dict.fromkeys(identities)),
            )
            first = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM templates").fetchone()[0] + 1
            db.executemany(
                "INSERT INTO templates(identity, vector) VALUES(?, ?)", zip(identities, (v.tobytes() for v in vectors))
            )
        return list(range(first, first + len(identities)))

    def remove(self, identity: str) -> list[int]:
        with self.transaction() as db:
            rowids = [r[0] for r in db.execute("SELECT rowid FROM templates WHERE identity = ?", (identity,))]
            cur = db.execute("DELETE FROM identities WHERE id = ?", (identity,))
            if cur.rowcount == 0:
                raise KeyError(identity)
            db.execute("DELETE FROM templates WHERE identity = ?", (identity,))
        return rowids

    # -- reads ------------------------------------------------------------------------------------

    def all_templates(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(rowids, vectors) of every template, in rowid order."""
        with self._lock:
            rows = self._db.execute("SELECT rowid, vector FROM templates ORDER BY rowid").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, vectors

    def templates_of(self, identity: str, dim: int) -> np.ndarray:
        with self._lock:
            rows = self._db.execute(
                "SELECT vector FROM templates WHERE identity = ? ORDER BY rowid", (identity,)
            ).fetchall()
        return np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(len(rows), dim)

    def vectors_of(self, rowids: np.ndarray, dim: int) -> dict[int, np.ndarray]:
        wanted = [int(r) for r in np.unique(rowids) if r >= 0]
        out: dict[int, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(wanted), 900):
                chunk = wanted[start : start + 900]
                marks = ",".join("?" * len(chunk))
                for rowid, blob in self._db.execute(
                    f"SELECT rowid, vector FROM templates WHERE rowid IN ({marks})", chunk
                ):
                    out[rowid] = np.frombuffer(blob, dtype=np.float32, count=dim)
        return out

    def identities_of(self, rowids: np.ndarray) -> dict[int, str]:
        wanted = [int(r) for r in np.unique(rowids) if r >= 0]
        out: dict[int, str] = {}
        with self._lock:
            for start in range(0, len(wanted), 900):
                chunk = wanted[start : start + 900]
                marks = ",".join("?" * len(chunk))
                out.update(self._db.execute(f"SELECT rowid, identity FROM templates WHERE rowid IN ({marks})", chunk))
        return out

    def identity(self, identity: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT i.id, i.metadata, i.created, i.updated, COUNT(t.rowid) FROM identities i "
                "LEFT JOIN templates t ON t.identity = i.id WHERE i.id = ? GROUP BY i.id",
                (identity,),
            ).fetchone()
        if row is None:
            return None
        return {"id": row[0], "metadata": json.loads(row[1]), "created": row[2], "updated": row[3], "templates": row[4]}

    def list(self, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT i.id, i.metadata, COUNT(t.rowid) FROM identities i LEFT JOIN templates t ON t.identity = i.id "
                "GROUP BY i.id ORDER BY i.id LIMIT ? OFFSET ?",
                (-1 if limit is None else limit, offset),
            ).fetchall()
        return [{"id": r[0], "metadata": json.loads(r[1]), "templates": r[2]} for r in rows]

    def count(self) -> tuple[int, int]:
        with self._lock:
            identities = self._db.execute("SELECT COUNT(*) FROM identities").fetchone()[0]
            templates = self._db.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
        return identities, templates
