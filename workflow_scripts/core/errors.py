"""Errors with messages meant for the person running the workflow."""


class EdgePTQError(Exception):
    """Base class: the message names the offending file, key or value and says what to do."""


class ConfigError(EdgePTQError):
    """A config value is invalid or impossible for the chosen backend."""


class DatasetUnavailable(EdgePTQError):
    """A dataset archive is missing, unreachable, corrupt or fails its checksum."""


class ModelLoadError(EdgePTQError):
    """A model file is missing, corrupt, or refused in safe mode."""


class BackendUnavailable(EdgePTQError):
    """The requested inference backend cannot run on this machine."""


class CorruptArtifact(EdgePTQError):
    """A file the workflow wrote earlier is unreadable or truncated; the message names the rule that remakes it."""


class DiskFull(EdgePTQError):
    """No space left where an artifact is written; the message names the folder and the space needed."""
