"""The gallery's source of truth: identities, their metadata and template vectors, in SQLite.

SQLite in WAL mode with ``synchronous=FULL``: a write that returned is on disk, and a process
killed mid-write leaves the last committed state.

**Change log.** Every template added or removed appends a row to ``changes`` (``seq``, the
template's row id, ``+1`` added / ``-1`` removed). Triggers write it, inside the transaction that
changes ``templates``, so no writer can change the templates without logging it (not even a
process still running an older twinnet, or a hand-written ``INSERT``). ``seq`` only grows: the
*change id* of a database state is the largest ``seq`` committed (:meth:`TemplateStore.head`).
A vector index (derived data) records the change id it reflects and catches up by replaying
``(its id, head]``. Template row ids are never reused (``AUTOINCREMENT``) and templates are
immutable (a trigger refuses updates of their vectors), so a template id is added at most once and
removed at most once: replaying a range reduces to a set difference.

**Content hashes.** A template may carry the hash of the input it was made from
(:func:`content_hash`); a unique index on ``(identity, content_hash)`` makes enrolling the same
content for the same identity twice a no-op, also when two processes race.

Schema version 2 (``meta.schema_version``); a version-1 database (no change log, no hashes) is
upgraded in place when opened, and a newer one is refused.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinnet.errors import DataError

SCHEMA_VERSION = 2

_TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS identities ("
    " id TEXT PRIMARY KEY, metadata TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL, updated REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS templates ("
    " rowid INTEGER PRIMARY KEY AUTOINCREMENT,"
    " identity TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,"
    " vector BLOB NOT NULL, source TEXT, content_hash TEXT)",
    "CREATE INDEX IF NOT EXISTS templates_by_identity ON templates(identity)",
)
_V2_OBJECTS = (
    "CREATE TABLE IF NOT EXISTS changes ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, template INTEGER NOT NULL, op INTEGER NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS templates_by_content ON templates(identity, content_hash)"
    " WHERE content_hash IS NOT NULL",
    "CREATE TRIGGER IF NOT EXISTS templates_log_add AFTER INSERT ON templates"
    " BEGIN INSERT INTO changes(template, op) VALUES (NEW.rowid, 1); END",
    "CREATE TRIGGER IF NOT EXISTS templates_log_remove AFTER DELETE ON templates"
    " BEGIN INSERT INTO changes(template, op) VALUES (OLD.rowid, -1); END",
    # the change log's replay assumes a template's vector never changes under its id
    "CREATE TRIGGER IF NOT EXISTS templates_immutable BEFORE UPDATE OF rowid, vector ON templates"
    " BEGIN SELECT RAISE(ABORT, 'gallery templates are immutable: remove and add instead'); END",
)

_UPSERT_META = "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"


def content_hash(data: bytes) -> str:
    """The content hash a template records for the input bytes it was made from."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_content_hash(path: str | Path) -> str:
    """:func:`content_hash` of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


@dataclass
class Written:
    """What one write transaction did, and the change ids around it: its own changes are exactly
    ``(before, after]``, because writers are serialised by SQLite's write lock."""

    added: list[int]
    removed: list[int]
    before: int
    after: int
    skipped: list[int] = field(default_factory=list)
    """Positions of the inputs not added because the identity already has their content hash."""


@dataclass
class ChangeSet:
    """The net effect of the change log over ``(since, head]``."""

    head: int
    added_ids: np.ndarray
    """Templates added in the range and still present, in change order."""
    added_vectors: np.ndarray
    removed_ids: np.ndarray
    """Templates present at ``since`` and removed since."""
    all_added: np.ndarray
    all_removed: np.ndarray

    def __len__(self) -> int:
        return len(self.added_ids) + len(self.removed_ids)


class TemplateStore:
    """Thread-safe SQLite store; one connection per store, guarded by a lock. Several stores (in
    one or several processes on one machine) may open one database: SQLite serialises their writes
    and each sees the others' committed data."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            # reads through a memory map (up to 1 GiB of the file): a re-scored search fetches
            # thousands of templates by rowid, 12,000 on 100,000 templates 44.5 → 38.1 ms p50;
            # writes still go through SQLite's own I/O and the WAL
            self._db.execute("PRAGMA mmap_size=1073741824")
            self._ensure_schema()
        except sqlite3.DatabaseError as err:
            raise DataError(f"{self.path}: not a readable gallery database ({err})") from None

    def _ensure_schema(self) -> None:
        """Create the schema, or upgrade a version-1 database, in one write transaction (so two
        processes opening a new gallery at once cannot both do it)."""
        version = self._schema_version()
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise DataError(
                f"{self.path}: gallery database schema v{version} was written by a newer twinnet "
                f"(this one reads v{SCHEMA_VERSION}); upgrade twinnet"
            )
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._schema_version()  # another process may have done it while we waited
            if version < SCHEMA_VERSION:
                for statement in _TABLES:
                    self._db.execute(statement)
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(templates)")}
                if "content_hash" not in columns:
                    self._db.execute("ALTER TABLE templates ADD COLUMN content_hash TEXT")
                for statement in _V2_OBJECTS:
                    self._db.execute(statement)
                self._db.execute(_UPSERT_META, ("schema_version", str(SCHEMA_VERSION)))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _schema_version(self) -> int:
        has_meta = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        if not has_meta:
            return 0
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            has_templates = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'templates'"
            ).fetchone()
            return 1 if has_templates else 0
        try:
            return int(row[0])
        except ValueError:
            raise DataError(f"{self.path}: corrupted gallery database (schema_version {row[0]!r})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: it takes SQLite's write lock at once, so writers queue here."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def snapshot(self) -> Iterator[TemplateStore]:
        """A read transaction: every read inside sees one committed state (WAL snapshot)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self
            finally:
                self._db.execute("COMMIT")

    @contextmanager
    def exclusive(self) -> Iterator[TemplateStore]:
        """Hold the database's write lock without writing: no other process commits meanwhile.
        Used to update shared derived state (a Qdrant collection) in step with the database."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self
            finally:
                self._db.execute("ROLLBACK")

    # -- meta and change ids ------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, values: dict[str, Any]) -> None:
        with self.transaction() as db:
            for k, v in values.items():
                db.execute(_UPSERT_META, (k, json.dumps(v)))

    def head(self) -> int:
        """The change id of the committed state: the last ``seq`` of the change log (0: none yet)."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return 0 if row is None else int(row[0])

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: it changes when *another* connection commits. Reading
        it touches only the WAL index in shared memory, which makes it the cheap per-query check."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    @property
    def generation(self) -> int:
        """The change id (kept under its version-1 name)."""
        return self.head()

    def pruned_through(self) -> int:
        """Changes up to this id were dropped from the log: an index older than it must be rebuilt."""
        value = self.get_meta("pruned_through")
        return int(value) if value is not None else 0

    def prune_log(self, through: int) -> int:
        """Drop the log entries up to ``through``; returns how many went."""
        with self.transaction() as db:
            current = db.execute("SELECT value FROM meta WHERE key = 'pruned_through'").fetchone()
            if current is not None and int(current[0]) >= through:
                return 0
            cur = db.execute("DELETE FROM changes WHERE seq <= ?", (through,))
            db.execute(_UPSERT_META, ("pruned_through", str(through)))
        return cur.rowcount

    def changes_since(self, since: int, dim: int) -> ChangeSet:
        """The net change since change id ``since`` (call inside :meth:`snapshot`, together with
        :meth:`head`, so that both describe one state)."""
        with self._lock:
            head = self.head()
            rows = self._db.execute(
                "SELECT c.template, c.op, t.vector FROM changes c "
                "LEFT JOIN templates t ON c.op = 1 AND t.rowid = c.template WHERE c.seq > ? ORDER BY c.seq",
                (since,),
            ).fetchall()
        all_added = [r[0] for r in rows if r[1] == 1]
        all_removed = [r[0] for r in rows if r[1] == -1]
        # an add whose template is gone was undone later in the range: never present, nothing to remove
        present = [(r[0], r[2]) for r in rows if r[1] == 1 and r[2] is not None]
        added_in_range = set(all_added)
        removed = [t for t in all_removed if t not in added_in_range]
        ids = np.fromiter((p[0] for p in present), dtype=np.int64, count=len(present))
        vectors = np.frombuffer(b"".join(p[1] for p in present), dtype=np.float32).reshape(len(present), dim)
        as_ids = lambda xs: np.asarray(xs, dtype=np.int64)  # noqa: E731
        return ChangeSet(head, ids, vectors, as_ids(removed), as_ids(all_added), as_ids(all_removed))

    # -- writes -------------------------------------------------------------------------------------

    def add(
        self, identity: str, vectors: np.ndarray, metadata: dict[str, Any] | None, replace: bool,
        sources: Sequence[str | None] | None = None, hashes: Sequence[str | None] | None = None,
    ) -> Written:  # fmt: skip
        """Add templates (and the identity if new) in one transaction; ``replace`` drops the
        identity's previous templates first. A template whose content hash the identity already
        has is not added (its position is in ``skipped``)."""
        now = time.time()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.transaction() as db:
            before = self._head_in(db)
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
            rowids, skipped = [], []
            for i, v in enumerate(vectors):
                cur = db.execute(
                    "INSERT INTO templates(identity, vector, source, content_hash) VALUES(?, ?, ?, ?) "
                    "ON CONFLICT(identity, content_hash) WHERE content_hash IS NOT NULL DO NOTHING",
                    (identity, v.tobytes(), sources[i] if sources else None, hashes[i] if hashes else None),
                )
                if cur.rowcount == 0:  # same content already enrolled for this identity
                    skipped.append(i)
                    continue
                assert cur.lastrowid is not None  # an INSERT always sets it
                rowids.append(cur.lastrowid)
            after = self._head_in(db)
        return Written(rowids, removed, before, after, skipped)

    def add_many(self, identities: list[str], vectors: np.ndarray) -> Written:
        """Bulk enrolment: one template per row, identities created as needed, one transaction."""
        now = time.time()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.transaction() as db:
            before = self._head_in(db)
            db.executemany(
                "INSERT OR IGNORE INTO identities(id, metadata, created, updated) VALUES(?, '{}', ?, ?)",
                ((i, now, now) for i in dict.fromkeys(identities)),
            )
            first = (db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'templates'").fetchone() or (0,))[0] + 1
            db.executemany(
                "INSERT INTO templates(identity, vector) VALUES(?, ?)", zip(identities, (v.tobytes() for v in vectors))
            )
            after = self._head_in(db)
        return Written(list(range(first, first + len(identities))), [], before, after)

    def remove(self, identity: str) -> Written:
        with self.transaction() as db:
            before = self._head_in(db)
            rowids = [r[0] for r in db.execute("SELECT rowid FROM templates WHERE identity = ?", (identity,))]
            # templates first, explicitly: their delete trigger logs them, whatever the cascade does
            db.execute("DELETE FROM templates WHERE identity = ?", (identity,))
            cur = db.execute("DELETE FROM identities WHERE id = ?", (identity,))
            if cur.rowcount == 0:
                raise KeyError(identity)
            after = self._head_in(db)
        return Written([], rowids, before, after)

    @staticmethod
    def _head_in(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return 0 if row is None else int(row[0])

    # -- reads --------------------------------------------------------------------------------------

    def all_templates(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(rowids, vectors) of every template, in rowid order."""
        with self._lock:
            rows = self._db.execute("SELECT rowid, vector FROM templates ORDER BY rowid").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, vectors

    def template_ids(self) -> np.ndarray:
        """Every template's row id, sorted (a scan of the small identity index, not of the vectors)."""
        with self._lock:
            cursor = self._db.execute("SELECT rowid FROM templates INDEXED BY templates_by_identity")
            ids = np.fromiter((r[0] for r in cursor), dtype=np.int64)
        ids.sort()
        return ids

    def known_hashes(self, identity: str, hashes: Iterable[str | None]) -> set[str]:
        """Which of ``hashes`` the identity's templates already carry."""
        wanted = [h for h in dict.fromkeys(hashes) if h is not None]
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(wanted), 900):
                chunk = wanted[start : start + 900]
                marks = ",".join("?" * len(chunk))
                found.update(
                    r[0]
                    for r in self._db.execute(
                        f"SELECT content_hash FROM templates WHERE identity = ? AND content_hash IN ({marks})",
                        [identity, *chunk],
                    )
                )
        return found

    def templates_of(self, identity: str, dim: int) -> np.ndarray:
        with self._lock:
            rows = self._db.execute(
                "SELECT vector FROM templates WHERE identity = ? ORDER BY rowid", (identity,)
            ).fetchall()
        return np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(len(rows), dim)

    def vectors_of(self, rowids: np.ndarray, dim: int) -> dict[int, np.ndarray]:
        """The templates of ``rowids`` still stored, by rowid (:meth:`templates_matrix` as a dict)."""
        ids, _, matrix = self.templates_matrix(rowids, dim)
        return dict(zip(ids.tolist(), matrix))

    def templates_matrix(self, rowids: np.ndarray, dim: int) -> tuple[np.ndarray, list[str], np.ndarray]:
        """The templates of ``rowids`` still stored: their sorted rowids, their identities and an
        ``(n, dim)`` float32 matrix in that order. One query and one buffer for all rows: a
        re-scoring asks for thousands."""
        wanted = [int(r) for r in np.unique(rowids) if r >= 0]
        found: list[int] = []
        owners: list[str] = []
        blobs: list[bytes] = []
        with self._lock:
            for start in range(0, len(wanted), 900):
                chunk = wanted[start : start + 900]
                marks = ",".join("?" * len(chunk))
                for rowid, identity, blob in self._db.execute(
                    f"SELECT rowid, identity, vector FROM templates WHERE rowid IN ({marks}) ORDER BY rowid", chunk
                ):
                    if len(blob) < 4 * dim:
                        raise DataError(f"template {rowid} holds {len(blob) // 4} values, not {dim}")
                    found.append(rowid)
                    owners.append(identity)
                    blobs.append(blob[: 4 * dim])
        matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(found), dim)
        return np.asarray(found, dtype=np.int64), owners, matrix

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
