"""User-facing errors.

An `EdgebvitError` carries a one-line message that names the problem and what to do. The CLI
prints it as `error: <message>` and exits non-zero without a traceback; anything else is a bug
and keeps its traceback.
"""


class EdgebvitError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2

    def __init__(self, message: str):
        # One line: the CLI prints it verbatim and tests match on it.
        super().__init__(" ".join(str(message).split()))


class DataError(EdgebvitError):
    """Missing, unreadable or malformed dataset."""


class ModelError(EdgebvitError):
    """Unknown model name, unloadable model file or an unsupported layer."""


class FlatbufferError(EdgebvitError):
    """A .tflite file that is missing, corrupt or not what the command expects."""


class ParityError(EdgebvitError):
    """The flatbuffer does not compute what the Keras model computes."""

    exit_code = 3


class DeviceError(EdgebvitError):
    """A benchmark device that cannot be reached, refuses login, or times out."""
