"""Helpers for the browser tests: a throw-away JupyterLab server and process bookkeeping.

The server runs on a free loopback port with a random token, with its own
Jupyter config, data, runtime, settings and workspace folders and a root
folder holding a temporary copy of ``notebooks/``: the tests neither touch
the repository nor read the user's Jupyter setup. ``stop()`` shuts it down
(REST API, then SIGKILL to whatever is left: server, its process group and
its kernels, which run in sessions of their own) and checks no process of
it is left.
"""
from __future__ import annotations

import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']


def chromium_path() -> str | None:
    """Debian's Chromium (``./test.sh`` installs it), or None."""
    for candidate in ('/usr/bin/chromium', shutil.which('chromium'), shutil.which('chromium-browser')):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# --- processes, from /proc (Linux) --------------------------------------------------------------

def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a process, or None when it is gone."""
    try:
        with open(f'/proc/{pid}/stat') as file:
            fields = file.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[2])


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir('/proc') if name.isdigit()]


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, dead and waiting to be reaped, does not count)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in 'ZXx'


def descendants(pid: int) -> set[int]:
    """All live processes below ``pid``."""
    children: dict[int, list[int]] = {}
    for other in _all_pids():
        stat = _stat(other)
        if stat is not None:
            children.setdefault(stat[1], []).append(other)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return {p for p in found if alive(p)}


def process_group(pgid: int) -> set[int]:
    """All live processes in process group ``pgid``."""
    return {p for p in _all_pids() if (stat := _stat(p)) is not None and stat[2] == pgid and alive(p)}


def cmdline(pid: int) -> str:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as file:
            return file.read().replace(b'\0', b' ').decode(errors='replace').strip()
    except OSError:
        return ''


def wait_gone(pids, timeout: float) -> set[int]:
    """Waits until none of ``pids`` runs; returns those still running."""
    deadline = time.monotonic() + timeout
    left = {p for p in pids if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if alive(p)}
    return left


# --- JupyterLab --------------------------------------------------------------------------------

class JupyterLab:
    """A JupyterLab server for one test session (see the module docstring).

    Args:
        notebooks: the folder copied to the server's root.
        workdir: an empty temporary folder for the copy, the config and the log.
        env: extra environment variables (for the server and so for the kernels).
    """

    def __init__(self, notebooks: pathlib.Path, workdir: pathlib.Path, env: dict[str, str] | None = None):
        self.workdir = pathlib.Path(workdir)
        self.root = self.workdir / 'notebooks'
        shutil.copytree(notebooks, self.root, ignore=shutil.ignore_patterns('.ipynb_checkpoints', '__pycache__'))
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.log_path = self.workdir / 'jupyterlab.log'
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self.known_pids: set[int] = set()

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}'

    def lab_url(self, notebook: str) -> str:
        return f'{self.url}/lab/tree/{notebook}?token={self.token}'

    def _settings(self) -> pathlib.Path:
        """User settings: no news or update checks (no network), nothing else changed."""
        settings = self.workdir / 'lab-settings'
        notification = settings / '@jupyterlab' / 'apputils-extension' / 'notification.jupyterlab-settings'
        notification.parent.mkdir(parents=True)
        notification.write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
        return settings

    def start(self, timeout: float = 180) -> None:
        config, data, runtime = (self.workdir / name for name in ('config', 'data', 'runtime'))
        for folder in (config, data, runtime):
            folder.mkdir()
        # The "Would you like to receive official Jupyter news?" toast, disabled outright.
        (config / 'labconfig').mkdir()
        (config / 'labconfig' / 'page_config.json').write_text(json.dumps(
            {'disabledExtensions': {'@jupyterlab/apputils-extension:announcements': True}}))
        env = dict(os.environ)
        env.pop('MPLBACKEND', None)  # test.sh sets Agg; a student's kernel has the inline backend
        env.pop('JUPYTER_TOKEN', None)
        env.update({'JUPYTER_CONFIG_DIR': str(config), 'JUPYTER_DATA_DIR': str(data),
                    'JUPYTER_RUNTIME_DIR': str(runtime), 'JUPYTERLAB_SETTINGS_DIR': str(self._settings()),
                    'JUPYTERLAB_WORKSPACES_DIR': str(self.workdir / 'workspaces'),
                    'IPYTHONDIR': str(self.workdir / 'ipython'), 'PYTHONUNBUFFERED': '1'})
        env.update(self.extra_env)
        command = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1',
                   f'--ServerApp.port={self.port}', '--ServerApp.port_retries=0',
                   f'--IdentityProvider.token={self.token}', f'--ServerApp.root_dir={self.root}',
                   '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate',
                   '--LabApp.extension_manager=readonly', '--ServerApp.terminals_enabled=False',
                   '--allow-root']  # root in containers (./test.sh installs Chromium as root)
        self._log = open(self.log_path, 'wb')  # noqa: SIM115 - closed in stop()
        # A session of its own: stop() can kill the whole process group.
        self.process = subprocess.Popen(command, cwd=self.root, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.known_pids.add(self.process.pid)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f'JupyterLab exited with {self.process.returncode}:\n{self.log_tail()}')
            try:
                with urllib.request.urlopen(self.api_request('status'), timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f'JupyterLab did not answer within {timeout} s:\n{self.log_tail()}')
            time.sleep(0.3)

    def api_request(self, path: str, method: str = 'GET') -> urllib.request.Request:
        return urllib.request.Request(f'{self.url}/api/{path}', method=method,
                                      headers={'Authorization': f'token {self.token}'})

    def api(self, path: str):
        with urllib.request.urlopen(self.api_request(path), timeout=10) as response:
            return json.loads(response.read() or b'null')

    def remember_processes(self) -> None:
        """Notes the server's current descendants (kernels), so stop() can check them too."""
        if self.process is not None:
            self.known_pids |= descendants(self.process.pid)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors='replace')[-chars:]
        except OSError:
            return ''

    def stop(self) -> set[int]:
        """Shuts the server and its kernels down, killing what does not stop; returns pids still running."""
        if self.process is None:
            return set()
        self.remember_processes()
        pgid = self.process.pid  # start_new_session: the server leads its own group
        if self.process.poll() is None:
            try:  # the clean way: shuts the kernels down too
                urllib.request.urlopen(self.api_request('shutdown', 'POST'), timeout=10).close()
            except (urllib.error.URLError, OSError):
                pass
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        for pid in sorted(self.known_pids | process_group(pgid)):
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        return wait_gone(self.known_pids | process_group(pgid), timeout=10)
