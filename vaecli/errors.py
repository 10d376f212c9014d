"""Domain errors: each carries a one-line message and the exit code the CLI returns."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2  # bad options or bad input files, or an output that cannot be written
    BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away (`| head`), as for any Unix tool
    INTERRUPTED = 130  # 128 + SIGINT
    TERMINATED = 143  # 128 + SIGTERM


class VaeError(Exception):
    """Base of every error the library raises on purpose."""

    exit_code: int = ExitCode.ERROR  # int: Interrupted carries the code of the signal that stopped it

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class SettingError(VaeError):
    """A setting (an argument, a file, a value) that cannot work; messages name it as `name` or `name=value`."""

    exit_code = ExitCode.USAGE


class UsageError(SettingError):
    """A command line that cannot work: raised by the command layer only."""


class InputError(SettingError):
    """A file or folder given by the user that cannot be read or used."""


class CheckpointError(InputError):
    """A checkpoint file that is not a readable vaecli checkpoint."""


class DataError(InputError):
    """A dataset that cannot be found, downloaded or decoded."""


class OutputError(SettingError):
    """An output (a file, or stdout) that cannot be written."""


class ReaderGone(VaeError):
    """The program reading stdout closed it (`| head`); not an OSError, so click leaves it to us."""

    exit_code = ExitCode.BROKEN_PIPE


class DeviceError(SettingError):
    """A requested device that this machine does not have."""


class TrainingError(VaeError):
    """Training that cannot go on (for instance a non-finite loss)."""


class ExportError(VaeError):
    """A model that the ONNX exporter cannot trace, or whose exported file does not compute what the model does."""


class Interrupted(VaeError):
    """Stopped by SIGINT or SIGTERM; the exit code says which."""

    def __init__(self, message: str, exit_code: int = ExitCode.INTERRUPTED):
        super().__init__(message)
        self.exit_code = exit_code


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (or its type's name), cut for a one-line message."""
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__
