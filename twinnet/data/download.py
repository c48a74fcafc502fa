"""Fetching data files over HTTPS: resumable, verified, and atomic.

A download goes to ``NAME.part``; an interrupted one resumes with an HTTP range request where
the server allows it (else starts over); the finished file is checked against its SHA-256 (or,
where only that is published, MD5 and size) and only then renamed to ``NAME``. A file that fails
its check is deleted, and the error says so.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from twinnet.data.omniglot import OFFICIAL_BASE_URL, OMNIGLOT_FILES, Checksum
from twinnet.errors import DataError

CHUNK = 1 << 16


def file_digests(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def verify_file(path: Path, expected: Checksum) -> str:
    """Raise DataError unless ``path`` matches ``expected``; returns what was checked."""
    sha, md5 = file_digests(path)
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        raise DataError(f"{path}: {size} bytes, expected {expected.size}")
    if expected.sha256 is not None:
        if sha != expected.sha256:
            raise DataError(f"{path}: SHA-256 {sha} does not match the expected {expected.sha256}")
        return f"SHA-256 {sha}"
    if expected.md5 is not None:
        if md5 != expected.md5:
            raise DataError(f"{path}: MD5 {md5} does not match the published {expected.md5}")
        return f"MD5 {md5} and size {size} (the published checksums); SHA-256 {sha}"
    return f"SHA-256 {sha} (nothing to compare with)"


def download_file(
    url: str,
    dest: str | Path,
    expected: Checksum,
    *,
    timeout: float = 60.0,
    retries: int = 3,
    progress: Callable[[int, int | None], None] | None = None,
) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify it, rename into place.

    Returns a line saying what was verified. An existing ``dest`` that passes the check is kept.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        try:
            return "already present, " + verify_file(dest, expected)
        except DataError:
            dest.unlink()  # a stale or damaged copy: fetch again
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for _ in range(max(1, retries)):
        try:
            _fetch(url, part, timeout, progress)
            break
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            if isinstance(err, urllib.error.HTTPError) and 400 <= err.code < 500 and err.code != 416:
                raise DataError(f"{url}: HTTP {err.code} {err.reason}") from None
            last_error = err
    else:
        raise DataError(f"{url}: download failed after {retries} tries ({last_error}); run again to resume")
    try:
        checked = verify_file(part, expected)
    except DataError as err:
        part.unlink(missing_ok=True)
        raise DataError(f"{url}: the download is not the expected file, deleted it: {err}") from None
    os.replace(part, dest)
    return checked


def _fetch(url: str, part: Path, timeout: float, progress: Callable[[int, int | None], None] | None) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "twinnet"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the partial file is already complete
            return
        raise
    with response:
        resumed = have and response.status == 206
        mode = "ab" if resumed else "wb"
        done = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        with open(part, mode) as f:
            while block := response.read(CHUNK):
                f.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
            f.flush()
            os.fsync(f.fileno())
    if total is not None and done < total:
        raise ConnectionError(f"connection closed after {done} of {total} bytes")


def download_omniglot(
    to: str | Path,
    names: list[str] | None = None,
    base_url: str = OFFICIAL_BASE_URL,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> dict[str, str]:
    """Fetch Omniglot's image zips (default: background and evaluation) into ``to``."""
    names = names or ["images_background.zip", "images_evaluation.zip"]
    unknown = [n for n in names if n not in OMNIGLOT_FILES]
    if unknown:
        raise DataError(f"unknown Omniglot file(s) {', '.join(unknown)}; known: {', '.join(OMNIGLOT_FILES)}")
    report = {}
    for name in names:
        report[name] = download_file(
            base_url.rstrip("/") + "/" + name, Path(to) / name, OMNIGLOT_FILES[name],
            progress=_progress_of(name, progress),
        )  # fmt: skip
    return report


def _progress_of(
    name: str, progress: Callable[[str, int, int | None], None] | None
) -> Callable[[int, int | None], None] | None:
    """``progress`` bound to one file's name."""
    if progress is None:
        return None
    report = progress
    return lambda done, total: report(name, done, total)
