"""The exceptions mrg raises for problems a user can fix.

Library code raises these with a message that names the file or option, says what is wrong and how to
fix it. The command-line interface turns them into one red line and exit code 1 (``MRG_DEBUG=1`` shows
the traceback). Anything that is not an ``MrgError`` is a bug in mrg and keeps its traceback.
"""

from __future__ import annotations


class MrgError(Exception):
    """Base class of every error a user can act on."""


class ConfigError(MrgError):
    """An unknown preset or key, a value of the wrong type, or an inconsistent combination of settings."""


class DataError(MrgError):
    """Input data is missing, malformed or inconsistent (reports, images, annotation files)."""


class DownloadError(DataError):
    """A download failed after its retries, or the server refused it."""


class AuthError(DownloadError):
    """The server rejected the credentials (HTTP 401/403)."""


class ChecksumError(DataError):
    """A file's size or checksum differs from the recorded value."""


class ArchiveError(DataError):
    """An archive is truncated, corrupt or holds a member that may not be extracted."""


class OutputDirError(MrgError):
    """An output directory belongs to another run or source and would be overwritten."""


class CheckpointError(MrgError):
    """A checkpoint is missing, corrupt, or was made by another model configuration."""


class TrainingError(MrgError):
    """Training cannot continue (for example a non-finite loss)."""


class MetricError(MrgError):
    """A metric cannot be computed (for example Java is missing for METEOR, or ids do not match)."""
