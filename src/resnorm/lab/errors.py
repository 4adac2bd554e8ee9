"""The lab's input errors: what the user got wrong, as opposed to a bug in resnorm.

Every class is a ``ValueError`` (the API's contract for bad arguments). The ``resnorm`` command turns
exactly these (and file-system errors) into one ``resnorm: error: ...`` line with exit status 2; any
other exception is a bug and surfaces as one.

A message may exist in two wordings: the API's (``resume=True``) and the command line's
(``--resume``). ``LabError(message, cli=...)`` keeps both; ``str(err)`` is the API's and
``err.cli_message`` the command line's (the same text when no ``cli`` wording was given).
"""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["CommandLineParser", "LabError", "ConfigError", "RunFolderError", "RunFolderExistsError",
           "NothingToResumeError", "WorkerError", "StopRequested"]


class LabError(ValueError):
    """Bad input to the lab; the message names the argument or file and what was expected."""

    def __init__(self, message: str, *, cli: str | None = None) -> None:
        super().__init__(message)
        self.cli_message = cli if cli is not None else message


class ConfigError(LabError):
    """A bad configuration key or value (or study setting); the message names it and lists what is valid."""


class RunFolderError(LabError):
    """A run or study folder that cannot be used as asked: nothing to resume, not empty, a corrupted or
    unreadable file (the message names the file and what is wrong with it)."""


class RunFolderExistsError(RunFolderError, FileExistsError):
    """The output folder is not empty (or not a folder) and neither resuming nor overwriting was asked."""


class NothingToResumeError(RunFolderError, FileNotFoundError):
    """Resuming was asked, but the run folder has no checkpoint (or does not exist)."""


class WorkerError(LabError):
    """A worker process of ``compare`` or ``study`` died (killed by the system, most often for memory):
    not a bug in resnorm, and not a stop the user asked for; the message says how it ended."""


class StopRequested(KeyboardInterrupt):
    """A run, study or command was stopped by a signal; ``signal`` is ``"SIGINT"`` (Ctrl-C) or
    ``"SIGTERM"``. The ``resnorm`` command exits with 130 or 143 (128 + the signal's number)."""

    def __init__(self, signal: str = "SIGINT") -> None:
        super().__init__(signal)
        self.signal = signal


class CommandLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are the lab's one line, ``resnorm: error: ...``
    naming the command's ``--help``, with exit status 2 (argparse prints its usage block first).
    Sub-command parsers made by ``add_subparsers`` are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"resnorm: error: {message} (see '{self.prog} --help')\n")
