"""Errors a user can cause and fix.

Every error raised for bad input derives from :class:`TwinnetError`; the CLI prints its message and
exits with status 2 instead of showing a traceback. Messages name the file, line or field at fault.
"""

from __future__ import annotations


class TwinnetError(Exception):
    """Base class for errors caused by input the user can correct."""


class DataError(TwinnetError):
    """A data folder, file or item is missing, unreadable or unusable."""


class ConfigError(TwinnetError):
    """A configuration key or value is wrong."""


class ModelFormatError(TwinnetError):
    """A saved model directory is incomplete, corrupt or from an incompatible version."""


class TrainingError(TwinnetError):
    """Training cannot go on (for example the loss became NaN)."""


class NotFoundError(DataError):
    """Something named does not exist (an identity in a gallery, a checkpoint): a 404 in the service."""
