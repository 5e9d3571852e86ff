"""Errors that reach the user as one clear line (exit status 2 on the command line)."""


class DeepCLError(Exception):
    """A problem with the user's input or environment, worded so that the user can fix it.

    The message names what is wrong and what to do. Front ends (CLI, Processing) show it as is,
    without a traceback.
    """


class InputError(DeepCLError):
    """A raster, band choice or option that cannot be used."""


class ModelFileError(DeepCLError):
    """A model file that is missing, corrupt, of another format or incompatible."""


class OutputError(DeepCLError):
    """An output that cannot be written."""


class DeviceMemoryError(DeepCLError):
    """The GPU ran out of memory even for the smallest piece of work detection can give it."""


class Cancelled(DeepCLError):
    """The run was cancelled through the cancel callable; no output is left behind."""

    def __init__(self, message: str = "Cancelled by the user; no output was written.") -> None:
        super().__init__(message)
