"""The ``tracking`` data format: a folder of sequence folders (OTB or VOT ground truth beside
numbered frames), one sequence folder, or a video file."""

from __future__ import annotations

from pathlib import Path

from twinnet.config import InputSpec
from twinnet.data.sources import DATA_SOURCES, Dataset, DataSource, ReadOptions
from twinnet.tracking.items import SequenceItems
from twinnet.tracking.sequences import VIDEO_EXTENSIONS, is_sequence_folder, read_sequences


@DATA_SOURCES.register("tracking")
class TrackingSource(DataSource):
    """Tracking sequences: every frame an item labelled by its sequence (:class:`SequenceItems`)."""

    priority = 20  # a folder of sequences is also a folder of image sub-folders: recognise it first

    def sniff(self, path: Path, spec: InputSpec) -> bool:
        if path.is_file():
            return path.suffix.lower() in VIDEO_EXTENSIONS
        return is_sequence_folder(path) or (path.is_dir() and any(is_sequence_folder(p) for p in path.iterdir()))

    def read(self, path: Path, spec: InputSpec, options: ReadOptions) -> Dataset:
        return Dataset(SequenceItems.from_sequences(read_sequences(path)), source=str(path))
