"""A pre-imported parent for the tests' command-line runs: each run is a real, separate process, forked.

Why: a ``python -m BrainGemma3DLib ...`` process spends 5-10 s of its life importing torch and
transformers before it reads its first argument, and the suite starts well over a hundred of them. This
process imports those libraries once (imports only: no tensor is computed here, so no thread pool exists to
break in a fork), then forks one child per request. The child is the command as a user would run it: its
own process, working folder, environment, argv, stdout and stderr (files the test reads), exit code,
logging set up from scratch by the command itself; what it does not repeat is the import.
What a fresh interpreter would also show, import-time noise on stderr, is checked by the tests that run
the command line with ``fresh=True`` (see ``helpers.run_cli``).

Protocol (one JSON object per line): request ``{"args", "env", "cwd", "out", "err"}`` on stdin, answer
``{"code"}`` on stdout once the child has ended (``-N`` when a signal N ended it, as ``subprocess`` says).
The process ends when its stdin closes."""

from __future__ import annotations

import atexit
import gc
import json
import os
import random
import signal
import sys
from pathlib import Path

MAIN = str(Path(__file__).resolve().parents[2] / "BrainGemma3DLib" / "__main__.py")


def warm() -> None:
    """Import what the commands import (the package's modules and the model classes transformers loads
    lazily), never running any of it."""
    import importlib
    import pkgutil

    import BrainGemma3DLib

    skip = ("BrainGemma3DLib.slicer", "BrainGemma3DLib.__main__")
    for module in pkgutil.walk_packages(BrainGemma3DLib.__path__, "BrainGemma3DLib."):
        if not module.name.startswith(skip):
            try:
                importlib.import_module(module.name)
            except Exception:  # an optional extra (e.g. the node's) missing: the child imports it, or says so
                pass
    for name in ("siglip.modeling_siglip", "gemma3.modeling_gemma3"):
        importlib.import_module(f"transformers.models.{name}")


def child(request: dict) -> None:
    """Become the command and exit as it does (never returns); an exception it lets out is printed as
    Python would and exits 1."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["out"], os.O_WRONLY),
                            (2, request["err"], os.O_WRONLY)):  # fmt: skip
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
    random.seed()
    sys.argv = [MAIN, *request["args"]]
    from BrainGemma3DLib.cli import main

    try:
        code = main(request["args"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    # What a normal exit does, less tearing down the imported libraries object by object (seconds here).
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the test's ctrl-c ends the test, not this server
    warm()
    gc.freeze()  # the imported objects stay out of the children's collections: their pages stay shared
    answers = sys.stdout
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            child(request)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        answers.write(json.dumps({"code": code}) + "\n")
        answers.flush()


if __name__ == "__main__":
    serve()
