"""Gallery operations on files, shared by the CLI and scripts.

Enrolment from files is idempotent and resumable: each template records the SHA-256 of the input
it was made from (the file's bytes, or a text's UTF-8 bytes), and enrolling the same content for
the same identity again adds nothing ("already enrolled"). Folder and document enrolment commit in
chunks and print each acknowledged chunk to standard error, so a run that was interrupted (even by
``kill -9``) can simply be run again: what was acknowledged is on disk and is not enrolled twice.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

from twinnet.data.text import read_utf8
from twinnet.errors import DataError
from twinnet.gallery.gallery import QUERY_SIDE, TEMPLATE_SIDE, Gallery, Template
from twinnet.gallery.store import content_hash, file_content_hash
from twinnet.inference import expand_inputs, is_input_file
from twinnet.model import Side

#: Where progress lines go: True (standard error), False (nowhere) or a function taking a line.
Progress = Union[bool, Callable[[str], None]]
#: Files per transaction in folder enrolment: a kill loses at most one chunk's work, re-done on re-run.
FOLDER_CHUNK = 64


def _reporter(progress: Progress) -> Callable[[str], None]:
    if callable(progress):
        return progress
    if progress:
        return lambda line: print(line, file=sys.stderr, flush=True)
    return lambda line: None


def takes_text(g: Gallery, side: Side = QUERY_SIDE) -> bool:
    """Whether the gallery's model takes texts on ``side``."""
    return g.model is not None and g.model.takes_texts(side)


def query_inputs(g: Gallery, inputs: list[str], side: Side = QUERY_SIDE) -> tuple[list[Any], list[str]]:
    """What to embed for INPUT arguments, and how to name them: texts when the model takes texts on
    ``side``, else files."""
    if takes_text(g, side):
        return list(inputs), [t if len(t) <= 60 else t[:57] + "..." for t in inputs]
    files = expand_inputs(inputs)
    return files, [str(f) for f in files]


def input_hashes(g: Gallery, items: list[Any], side: Side = TEMPLATE_SIDE) -> list[str]:
    """Content hashes of what :func:`query_inputs` returned: of each text's UTF-8 bytes for a text
    model, else of each file's bytes."""
    if takes_text(g, side):
        return [content_hash(str(t).encode("utf-8")) for t in items]
    return [file_content_hash(f) for f in items]


def enroll_inputs(
    g: Gallery, identity: str, inputs: list[str], metadata: dict[str, Any] | None, replace: bool,
    progress: Progress = True, template: Template = "all",
) -> int:  # fmt: skip
    """Enrol INPUT arguments (files, or texts) as ``identity`` (one template each, or with
    ``template="mean"`` one for them all); inputs it already has (same content) are reported as
    already enrolled and not added again. Returns the templates added."""
    items, names = query_inputs(g, inputs, TEMPLATE_SIDE)
    result = g.enroll_detailed(identity, items, metadata, replace=replace, sources=names,
                               hashes=input_hashes(g, items), template=template)  # fmt: skip
    _reporter(progress)(f"{identity}: {result.added} added, {result.already} already enrolled")
    return result.added


def read_documents(path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """``(id, text, metadata)`` rows of a JSON Lines file (``{"id", "text", "metadata"?}``) or a
    TSV file (``id<TAB>text``); errors name the line."""
    path = Path(path)
    lines = read_utf8(path, "documents file").splitlines()
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        if path.suffix.lower() == ".jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("text"), str):
                raise DataError(f"{where}: expected an object with string fields id and text")
            metadata = row.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise DataError(f"{where}: metadata must be a JSON object")
            rows.append((row["id"], row["text"], metadata))
        else:
            identity, sep, text = line.partition("\t")
            if not sep or not identity.strip():
                raise DataError(f"{where}: expected ID<TAB>TEXT")
            rows.append((identity, text, {}))
    if not rows:
        raise DataError(f"{path}: no documents")
    return rows


def enroll_documents(
    g: Gallery, path: Path, replace: bool = False, batch_size: int = 256, progress: Progress = True
) -> dict[str, int]:
    """Enrol each document of a JSONL/TSV file as an identity (its text is its one template;
    several rows with one id give that id several templates, one per distinct text). A text the
    identity already has is not enrolled again, so a re-run adds nothing. Returns templates added
    per identity."""
    if not takes_text(g, TEMPLATE_SIDE):
        raise DataError("--documents: this gallery's model does not take texts")
    say = _reporter(progress)
    report: dict[str, int] = {}
    rows = read_documents(path)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        hashes = [content_hash(text.encode("utf-8")) for _, text, _ in chunk]
        # embed only the texts not enrolled yet (replace re-enrols everything it touches)
        todo = [i for i, (identity, _, _) in enumerate(chunk)
                if replace or hashes[i] not in g.store.known_hashes(identity, [hashes[i]])]  # fmt: skip
        vectors = g.embed([chunk[i][1] for i in todo], precomputed=False, side=TEMPLATE_SIDE) if todo else None
        position = {j: n for n, j in enumerate(todo)}
        added = already = 0
        for j, (identity, text, metadata) in enumerate(chunk):
            first = identity not in report
            embedded = j in position and vectors is not None
            # already enrolled: nothing is embedded, but metadata still merges as in a first run
            item: Any = vectors[position[j]][None] if embedded and vectors is not None else [text]
            result = g.enroll_detailed(identity, item, metadata or None, replace=replace and first,
                                       sources=[text[:200]], precomputed=embedded, hashes=[hashes[j]])  # fmt: skip
            report[identity] = report.get(identity, 0) + result.added
            added, already = added + result.added, already + result.already
        say(f"documents {start + 1}-{start + len(chunk)} of {len(rows)}: {added} added, {already} already enrolled")
    return report


def enroll_folder(
    g: Gallery, folder: Path, replace: bool = False, progress: Progress = True, chunk: int = FOLDER_CHUNK,
    template: Template = "all",
) -> dict[str, int]:  # fmt: skip
    """Each sub-folder of ``folder`` is an identity; its input files (images, recordings, ``.npy``
    arrays) are that identity's templates, or with ``template="mean"`` make one template, their
    mean. Resumable: files whose content the identity already has are skipped, and each committed
    chunk of files is acknowledged on standard error (``progress``) as ``IDENTITY: N added, M
    already enrolled (files a-b of n)``. Returns templates added per identity.

    With ``replace``, an identity's earlier templates are dropped before its first chunk, so a
    re-run with ``replace`` enrols everything again (once)."""
    if template == "mean":
        chunk = 1 << 62  # one mean of every file of the identity, not one per chunk
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"folder not found: {folder}")
    say = _reporter(progress)
    jobs = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(f for f in sub.rglob("*") if is_input_file(f))
        if files:
            jobs.append((sub.name, files))
    if not jobs:
        raise DataError(f"{folder}: no class sub-folders with inputs")
    report = {}
    for number, (identity, files) in enumerate(jobs, start=1):
        report[identity] = 0
        for start in range(0, len(files), chunk):
            part = files[start : start + chunk]
            result = g.enroll_detailed(identity, part, replace=replace and start == 0, sources=[str(f) for f in part],
                                       hashes=[file_content_hash(f) for f in part], template=template)  # fmt: skip
            report[identity] += result.added
            where = f"files {start + 1}-{start + len(part)} of {len(files)}; identity {number} of {len(jobs)}"
            say(f"{identity}: {result.added} added, {result.already} already enrolled ({where})")
    return report
