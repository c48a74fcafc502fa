"""Gallery operations on files, shared by the CLI and scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twinnet.data.images import is_image_file
from twinnet.errors import DataError
from twinnet.gallery.gallery import Gallery
from twinnet.inference import expand_inputs


def enroll_inputs(g: Gallery, identity: str, inputs: list[Path], metadata: dict[str, Any] | None, replace: bool) -> int:
    files = expand_inputs(inputs)
    return g.enroll(identity, files, metadata, replace=replace, sources=[str(f) for f in files])


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
