"""Gallery operations on files, shared by the CLI and scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twinnet.data.images import is_image_file
from twinnet.data.text import read_utf8
from twinnet.errors import DataError
from twinnet.gallery.gallery import QUERY_SIDE, TEMPLATE_SIDE, Gallery
from twinnet.inference import expand_inputs
from twinnet.model import Side


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


def enroll_inputs(g: Gallery, identity: str, inputs: list[str], metadata: dict[str, Any] | None, replace: bool) -> int:
    items, names = query_inputs(g, inputs, TEMPLATE_SIDE)
    return g.enroll(identity, items, metadata, replace=replace, sources=names)


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


def enroll_documents(g: Gallery, path: Path, replace: bool = False, batch_size: int = 256) -> dict[str, int]:
    """Enrol each document of a JSONL/TSV file as an identity (its text is its one template;
    several rows with one id give that id several templates)."""
    if not takes_text(g, TEMPLATE_SIDE):
        raise DataError("--documents: this gallery's model does not take texts")
    report: dict[str, int] = {}
    rows = read_documents(path)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        vectors = g.embed([text for _, text, _ in chunk], precomputed=False, side=TEMPLATE_SIDE)
        for (identity, text, metadata), vector in zip(chunk, vectors):
            first = identity not in report
            report[identity] = report.get(identity, 0) + g.enroll(
                identity, vector[None], metadata or None, replace=replace and first, sources=[text[:200]],
                precomputed=True,
            )  # fmt: skip
    return report


def enroll_folder(g: Gallery, folder: Path, replace: bool = False) -> dict[str, int]:
    """Each sub-folder of ``folder`` is an identity; its images are that identity's templates."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"folder not found: {folder}")
    report = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(f for f in sub.rglob("*") if f.is_file() and (is_image_file(f) or f.suffix == ".npy"))
        if files:
            report[sub.name] = g.enroll(sub.name, files, replace=replace, sources=[str(f) for f in files])
    if not report:
        raise DataError(f"{folder}: no class sub-folders with inputs")
    return report
