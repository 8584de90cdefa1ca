"""A warm interpreter for the command-line tests: it imports torch, Hydra and speechkit once, then forks
a child per command, so a command costs its own work and not 2.5 s of imports each time.

``python -m tests.zygote`` reads one request per line on stdin (JSON: ``module``, ``args``, ``env``,
``cwd``, ``stdout``, ``stderr``: the files the child writes), forks, and answers two lines on stdout:
the child's pid, then its exit status as subprocess reports it (``-N`` for a signal). It exits when
its stdin closes (the pytest worker that started it is gone).

The child runs the module as ``python -m MODULE ARGS…`` would (``runpy``, ``sys.argv``, the
environment, the working directory; its stdin is /dev/null), and exits as Python does: 0, a
``sys.exit`` status or message, a traceback and 1. Whatever the imports printed in this process
comes first on the child's stdout and stderr, as it would in a fresh one.

:func:`tests.conftest.run_cli` sends a speechkit command here when nothing about it needs a fresh
interpreter: its environment differs from the pytest worker's only in ``SPEECHKIT_*``, ``HYDRA_*`` and
``PYTEST_*`` (read when a command runs, not when it imports), and the zygote is started again when the
worker's own environment changes. ``SPEECHKIT_TEST_FRESH=1`` runs every command fresh.
No threads are started here before a fork: the child is a whole copy of this process.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

#: Imported once, here, before any fork: what the commands import (speechkit first, as a command does:
#: it sets OMP_WAIT_POLICY before torch loads OpenMP; torch._dynamo, 1.1 s, is what torch's optimisers import
#: when training starts). Plugins are imported, not loaded: each child loads the entry points itself.
PRELOAD = ("speechkit", "torch", "torchaudio", "hydra", "omegaconf", "speechkit.config", "speechkit.trainer",
           "speechkit.pipeline", "speechkit.checkpoint", "speechkit.rundir", "torch._dynamo", "matplotlib.pyplot")


def _preload() -> tuple[bytes, bytes, dict[str, str]]:
    """Import PRELOAD (and the built-in plugins' modules) with fds 1 and 2 going to files; what they got,
    and the environment variables the imports set (torch's inductor sets its cache folder)."""
    import importlib

    before = dict(os.environ)
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            for name in PRELOAD:
                importlib.import_module(name)
            from speechkit.registry import BUILTIN_MODULES

            for name in BUILTIN_MODULES:
                importlib.import_module(name)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        out.seek(0)
        err.seek(0)
        return out.read(), err.read(), {k: v for k, v in os.environ.items() if before.get(k) != v}


def _child(request: dict, preloaded: tuple[bytes, bytes, dict[str, str]], control: tuple[int, int]) -> None:
    """Become ``python -m MODULE ARGS…`` and exit; never returns."""
    code = 1
    try:
        os.setpgid(0, 0)  # a group of its own: a timeout kills the command and whatever it started
        for fd in control:
            os.close(fd)
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.close(stdin)
        for fd, path, text in ((1, request["stdout"], preloaded[0]), (2, request["stderr"], preloaded[1])):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(f, text)
            os.dup2(f, fd)
            os.close(f)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for key, value in preloaded[2].items():  # as the imports would have set them in a fresh process
            os.environ.setdefault(key, value)
        sys.path[0] = request["cwd"]  # ``python -m`` puts the working directory first
        code = _run(request["module"], request["args"])
    finally:
        os._exit(code)


def _run(module: str, args: list[str]) -> int:
    """Run ``module`` as ``__main__`` and shut down as the interpreter would; the exit status."""
    import atexit
    import runpy
    import threading

    sys.argv = [module, *args]  # runpy puts the module's file first, as ``python -m`` does
    sys.modules.pop(module, None)  # run afresh as ``__main__``, as ``python -m`` runs it (imported by nothing)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    try:
        threading._shutdown()  # the interpreter's own order: wait for threads, then atexit, then flush
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    return code


def main() -> None:
    control = os.dup(0), os.dup(1)  # requests in, answers out; fds 0 and 1 become the children's
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    preloaded = _preload()
    requests = os.fdopen(control[0], "r")
    answers = os.fdopen(control[1], "w")
    answers.write("ready\n")
    answers.flush()
    for line in requests:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, preloaded, control)
        answers.write(f"{pid}\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(f"{os.waitstatus_to_exitcode(status)}\n")
        answers.flush()


if __name__ == "__main__":
    main()
