"""The watchdog of a local Flower federation: nothing is left behind, however the process that started it dies.

``fedteach.flower.run_local_federation`` starts this file as a script (it
imports only the standard library and psutil, not TensorFlow) in a session of
its own, with a pipe on its standard input, and gives every process of the
federation the environment variable ``FEDTEACH_FEDERATION=<work folder>``.
Flower's processes pass their environment on to the processes they start
(ServerApp, ClientApps), also those it detaches into sessions of their own, so
the variable names every process of the run. The watchdog:

* prints the id of every such process as it appears (the run's full process
  count, short-lived ClientApp processes included);
* when its standard input closes (the starting process finished, or died:
  SIGTERM, SIGKILL, a Jupyter kernel restarted), stops every process carrying
  the variable (SIGTERM, then SIGKILL after 3 s) and removes the work folder
  with the clients' data (unless told to keep it), then exits.

Usage: ``python flower_watchdog.py WORKDIR remove|keep``
"""
from __future__ import annotations

import os
import shutil
import sys
import threading

import psutil

MARKER = "FEDTEACH_FEDERATION"
POLL_SECONDS = 0.2


def members(workdir: str) -> list:
    """The processes whose environment says they belong to the federation in ``workdir`` (this one aside).

    Example:
        >>> members('/no/such/federation')
        []
    """
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(MARKER) == workdir:
                found.append(proc)
        except (psutil.Error, OSError):  # gone, a zombie, or another user's
            pass
    return found


def stop(workdir: str, grace: float = 3.0) -> None:
    """SIGTERM to every member, SIGKILL to those still there after ``grace`` seconds; twice, for late children.

    Example:
        >>> stop('/no/such/federation')  # nothing to stop
    """
    for _ in range(2):
        procs = members(workdir)
        if not procs:
            return
        for proc in procs:
            try:
                proc.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=grace)


def _report(pid: int) -> None:
    try:
        print(pid, flush=True)
    except (BrokenPipeError, ValueError):  # the starting process is gone: nobody reads
        pass


def _main(argv: list[str]) -> int:
    workdir, keep = argv[0], argv[1] == "keep"
    closed = threading.Event()

    def wait_for_eof():
        sys.stdin.read()
        closed.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    seen = set()

    def scan():
        for proc in members(workdir):
            if proc.pid not in seen:
                seen.add(proc.pid)
                _report(proc.pid)

    while not closed.wait(POLL_SECONDS):
        scan()
    scan()
    stop(workdir)
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
