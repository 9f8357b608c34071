"""Errors that the command line turns into one clear line and exit code 2."""

from __future__ import annotations

import os


class InputError(Exception):
    """Bad input or usage: the message names the file (when there is one) and the problem.

    The CLI prints it as a single line without a traceback and exits with code 2, because the user can fix it.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
