"""Builds what mybinder.org builds, without Docker, and runs every notebook in it.

mybinder.org turns the repository into an image with repo2docker. This script
asks repo2docker for the Dockerfile it would build (``repo2docker --no-build
--debug``, which needs no Docker daemon), then reproduces that Dockerfile's
Python steps in a fresh virtual environment, in the Dockerfile's order:

1. the base environment: every Python package of the conda lock file the
   Dockerfile copies to ``/tmp/env/environment.lock`` (jupyterlab, notebook,
   ipykernel, ipywidgets, ... at the lock's exact versions; the interpreter
   must have the lock's major.minor version);
2. ``pip install -r binder/requirements.txt`` in a folder holding only that
   file (the Dockerfile runs it before the repository is copied in);
3. ``binder/postBuild`` in a copy of the repository's tracked files.

Then ``pip check`` must report no conflict, and every notebook runs under
nbval (``--nbval-lax``) in that environment (pytest and nbval are added only
after ``pip check``), after a small notebook that trains the dashboard from
its worker thread and fails if a round did not reach the widgets (nbval
alone would pass: the dashboard shows such errors instead of raising them;
ipykernel 7.0.1 failed there). ``--override`` installs other versions on top,
e.g. ``--override ipykernel==7.0.1 jupyter_client==8.6.3 tornado==6.5.2`` to
check the dashboard with the base's own ipykernel. Each notebook's peak memory is measured as the largest
sum of resident memory over the process tree below the test process (the
kernel and whatever it starts, e.g. Flower's processes), sampled every 0.1 s:
mybinder.org stops a session at 2 GB. The notebooks see ``MEM_LIMIT`` (bytes)
as on mybinder.org, so a notebook can detect the limit and skip what does
not fit.

Usage::

    pip install jupyter-repo2docker      # the `test` extra has it
    python tools/binder_check.py         # fresh environment in a temporary folder
    python tools/binder_check.py --venv /tmp/binder-venv --reuse --fast

Exits 0 when everything passed; writes ``artifacts/binder/report.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psutil

ROOT = pathlib.Path(__file__).resolve().parents[1]
MEMORY_LIMIT_MB = 2048  # mybinder.org's limit per session

# conda-forge names whose PyPI distribution is named differently
CONDA_TO_PYPI = {'brotli-python': 'brotli', 'jupyterhub-base': 'jupyterhub', 'nbconvert-core': 'nbconvert',
                 'python-fastjsonschema': 'fastjsonschema', 'cached_property': 'cached-property'}
# conda packages that are not Python distributions or come with the interpreter and venv
NOT_ON_PYPI = {'python', 'python_abi', 'pip', 'setuptools', 'wheel', 'nodejs'}


def run(command, **kwargs) -> subprocess.CompletedProcess:
    """Runs a command, echoing it; raises with its output when it fails."""
    print('$', ' '.join(map(str, command)), flush=True)
    result = subprocess.run(command, text=True, capture_output=True, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f'failed ({result.returncode}): {" ".join(map(str, command))}\n'
                         f'{result.stdout[-4000:]}\n{result.stderr[-4000:]}')
    return result


def dockerfile(repo: pathlib.Path) -> str:
    """The Dockerfile repo2docker would build for ``repo`` (printed by ``--no-build --debug``)."""
    executable = shutil.which('repo2docker') or str(pathlib.Path(sys.executable).with_name('repo2docker'))
    if not os.path.exists(executable):
        raise SystemExit('repo2docker is missing: pip install jupyter-repo2docker')
    result = run([executable, '--no-build', '--debug', '--user-id', '1000', '--user-name', 'jovyan', str(repo)])
    if 'FROM ' not in result.stdout:
        raise SystemExit(f'repo2docker printed no Dockerfile:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}')
    return result.stdout


def unescape(name: str) -> str:
    """The original path of a repo2docker build-script file (escapism: ``-2f`` is ``/``, a hash at the end)."""
    name = re.sub(r'-[0-9a-f]{6}$', '', name)
    return re.sub(r'-([0-9a-f]{2})', lambda m: chr(int(m.group(1), 16)), name)


def base_lock(text: str) -> pathlib.Path:
    """The conda lock file the Dockerfile installs as the base environment."""
    match = re.search(r'^COPY \S+ build_script_files/(\S+) /tmp/env/environment\.lock$', text, re.M)
    if not match:
        raise SystemExit('the Dockerfile copies no /tmp/env/environment.lock: not the conda-based Python '
                         'buildpack this script simulates; look at the Dockerfile by hand.')
    path = pathlib.Path(unescape(match.group(1)))
    if not path.exists():
        raise SystemExit(f'the lock file {path} named in the Dockerfile is not on this machine.')
    return path


def lock_packages(lock: pathlib.Path) -> dict[str, str]:
    """PyPI name -> version of the Python packages in a conda ``@EXPLICIT`` lock (and the interpreter's)."""
    packages = {}
    for url in re.findall(r'^https?://\S+', lock.read_text(), re.M):
        filename = url.rsplit('/', 1)[1].split('#')[0]
        stem = re.sub(r'\.(conda|tar\.bz2)$', '', filename)
        name, version, build = stem.rsplit('-', 2)
        if name == 'python':
            packages['python'] = version
        elif re.match(r'py(h|\d|_)', build) and name not in NOT_ON_PYPI:
            packages[CONDA_TO_PYPI.get(name, name)] = version
    return packages


def build_steps(text: str) -> list[str]:
    """The Dockerfile's repository steps, in order: ``'requirements'``, ``'postBuild'``."""
    steps = []
    for line in text.splitlines():
        if line.startswith('RUN') and 'pip install' in line and 'binder/requirements.txt' in line:
            steps.append('requirements')
        elif line.startswith('RUN') and re.search(r'\./binder/postBuild\s*$', line):
            steps.append('postBuild')
    return steps


def python_for(version: str) -> str:
    """An interpreter with the lock's major.minor version."""
    major_minor = '.'.join(version.split('.')[:2])
    for candidate in (f'python{major_minor}', sys.executable):
        path = shutil.which(candidate)
        if path:
            found = run([path, '-c', 'import sys; print("%d.%d" % sys.version_info[:2])']).stdout.strip()
            if found == major_minor:
                return path
    raise SystemExit(f'Binder uses Python {version}; no python{major_minor} found here.')


def tracked_copy(destination: pathlib.Path) -> None:
    """The repository's tracked and untracked-but-not-ignored files, as repo2docker copies a clone."""
    files = run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT).stdout
    for name in filter(None, files.split('\0')):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def build_environment(venv: pathlib.Path, work: pathlib.Path, text: str) -> dict:
    """Creates ``venv`` as the Dockerfile's steps would; returns what it installed."""
    lock = base_lock(text)
    packages = lock_packages(lock)
    python = python_for(packages.pop('python'))
    run([python, '-m', 'venv', str(venv)])
    pip = [str(venv / 'bin' / 'python'), '-m', 'pip']
    run(pip + ['install', '--quiet', '--no-deps'] + [f'{n}=={v}' for n, v in sorted(packages.items())])
    env = dict(os.environ, PATH=f'{venv / "bin"}{os.pathsep}{os.environ["PATH"]}', VIRTUAL_ENV=str(venv))
    steps = build_steps(text)
    if steps != ['requirements', 'postBuild'] and steps != ['requirements'] and steps != ['postBuild']:
        raise SystemExit(f'unexpected repository steps in the Dockerfile: {steps}')
    only_requirements = work / 'requirements-step'
    (only_requirements / 'binder').mkdir(parents=True)
    shutil.copy2(ROOT / 'binder' / 'requirements.txt', only_requirements / 'binder' / 'requirements.txt')
    repo = work / 'repo'
    tracked_copy(repo)
    for step in steps:
        if step == 'requirements':
            run(pip + ['install', '--quiet', '-r', 'binder/requirements.txt'], cwd=only_requirements, env=env)
        else:
            run(['bash', '-c', './binder/postBuild'], cwd=repo, env=env)
    return {'lock': lock.name, 'base_packages': len(packages), 'steps': steps, 'repo': str(repo),
            'versions': {name: packages[name] for name in ('jupyterlab', 'notebook', 'ipykernel', 'ipywidgets')
                         if name in packages}}


DASHBOARD_SMOKE = {
    'cells': [
        {'cell_type': 'code', 'execution_count': None, 'metadata': {}, 'outputs': [], 'source': (
            'import fedteach as ft\n'
            'train, test = ft.load_offline_digits(num_clients=4)\n'
            'config = ft.ExperimentConfig(local_epochs=1, rounds=2, clients_per_round=2, eval_clients=2)\n'
            'dashboard = ft.widgets.TrainingDashboard(train, test, config)\n'
            'dashboard')},
        {'cell_type': 'code', 'execution_count': None, 'metadata': {}, 'outputs': [], 'source': (
            'dashboard.run(block=True)\n'
            'assert dashboard.last_error is None, dashboard.error.value\n'
            "assert dashboard.round_label.value == 'round 2 / 2 of run 1 (model trained 2 rounds)', "
            'dashboard.round_label.value')},
    ],
    'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}},
    'nbformat': 4, 'nbformat_minor': 5}
"""A notebook that fails when the dashboard's worker thread cannot update its widgets."""


def tree_rss(pid: int) -> tuple[int, int]:
    """(resident bytes of ``pid``'s descendants, of ``pid`` itself)."""
    try:
        root = psutil.Process(pid)
        own = root.memory_info().rss
        children = root.children(recursive=True)
    except psutil.Error:
        return 0, 0
    total = 0
    for child in children:
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total, own


def run_notebook(venv: pathlib.Path, repo: pathlib.Path, notebook: str, env: dict, timeout: float,
                 log: pathlib.Path) -> dict:
    """Runs one notebook under nbval (its output to ``log``); returns its result, time and peak memory (MB)."""
    command = [str(venv / 'bin' / 'python'), '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--nbval-lax',
               '-o', 'addopts=', f'notebooks/{notebook}']
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    peak_children = peak_all = 0
    output = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    while process.poll() is None:
        children, own = tree_rss(process.pid)
        peak_children, peak_all = max(peak_children, children), max(peak_all, children + own)
        if time.monotonic() - start > timeout:
            process.kill()
        time.sleep(0.1)
    reader.join(10)
    text = ''.join(output)
    log.write_text(re.sub(r'\x1b\[[0-9;]*m', '', text))
    summary = text.strip().splitlines()[-1] if text.strip() else ''
    return {'notebook': notebook, 'passed': process.returncode == 0, 'summary': summary,
            'seconds': round(time.monotonic() - start, 1), 'peak_kernel_mb': round(peak_children / 2**20),
            'peak_tree_mb': round(peak_all / 2**20), 'log': str(log)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--venv', type=pathlib.Path, help='where to build the environment (default: temporary)')
    parser.add_argument('--reuse', action='store_true', help='reuse --venv if it exists (skips the build)')
    parser.add_argument('--fast', action='store_true', help='FEDTEACH_FAST=1: shorter loops in the notebooks')
    parser.add_argument('--notebooks', nargs='*', help='notebook file names (default: all in notebooks/)')
    parser.add_argument('--timeout', type=float, default=900, help='seconds per notebook')
    parser.add_argument('--override', nargs='*', default=[], help='requirements installed after postBuild')
    parser.add_argument('--report', type=pathlib.Path, default=ROOT / 'artifacts' / 'binder' / 'report.json')
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix='binder-check-') as temporary:
        work = pathlib.Path(temporary)
        venv = args.venv or work / 'venv'
        text = dockerfile(ROOT)
        report = {'dockerfile_from': re.search(r'^FROM (\S+)', text, re.M).group(1)}
        if args.reuse and (venv / 'bin' / 'python').exists():
            repo = work / 'repo'
            tracked_copy(repo)  # this copy replaces the one the environment's editable install pointed at
            env = dict(os.environ, PATH=f'{venv / "bin"}{os.pathsep}{os.environ["PATH"]}', VIRTUAL_ENV=str(venv))
            run(['bash', '-c', './binder/postBuild'], cwd=repo, env=env)
            report['build'] = {'reused': str(venv), 'repo': str(repo)}
        else:
            if venv.exists():
                shutil.rmtree(venv)
            started = time.monotonic()
            report['build'] = build_environment(venv, work, text)
            report['build']['seconds'] = round(time.monotonic() - started)
            repo = pathlib.Path(report['build']['repo'])
        python = str(venv / 'bin' / 'python')
        if args.override:
            run([python, '-m', 'pip', 'install', '--quiet'] + args.override)
            report['override'] = args.override
        check = subprocess.run([python, '-m', 'pip', 'check'], text=True, capture_output=True)
        report['pip_check'] = (check.stdout + check.stderr).strip()
        print('pip check:', report['pip_check'], flush=True)
        if check.returncode == 0:
            run([python, '-m', 'pip', 'install', '--quiet', 'pytest', 'nbval'])
            env = {key: value for key, value in os.environ.items()
                   if not key.startswith(('FEDTEACH_', 'VIRTUAL_ENV', 'PYTHON', 'JUPYTER', 'MPLBACKEND'))}
            # mybinder.org tells a session its memory limit in MEM_LIMIT (bytes), as jupyter-resource-usage reads it
            env.update(PATH=f'{venv / "bin"}{os.pathsep}{os.environ["PATH"]}', TF_CPP_MIN_LOG_LEVEL='2',
                       MEM_LIMIT=str(MEMORY_LIMIT_MB * 2**20))
            if args.fast:
                env['FEDTEACH_FAST'] = '1'
            notebooks = args.notebooks or sorted(p.name for p in (repo / 'notebooks').glob('*.ipynb'))
            (repo / 'notebooks' / '00_dashboard_smoke.ipynb').write_text(json.dumps(DASHBOARD_SMOKE))
            notebooks = ['00_dashboard_smoke.ipynb'] + notebooks
            report['notebooks'] = []
            for notebook in notebooks:
                args.report.parent.mkdir(parents=True, exist_ok=True)
                result = run_notebook(venv, repo, notebook, env, args.timeout,
                                      args.report.parent / f'{pathlib.Path(notebook).stem}.log')
                report['notebooks'].append(result)
                print(f"{notebook:50s} {'passed' if result['passed'] else 'FAILED'} {result['seconds']:6.1f} s  "
                      f"kernel tree peak {result['peak_kernel_mb']:5d} MB (with pytest {result['peak_tree_mb']} MB)"
                      f"  {result['summary']}", flush=True)
                if not result['passed']:
                    print(f"    see {result['log']}", flush=True)
        ok = (check.returncode == 0 and all(r['passed'] for r in report['notebooks'])
              and all(r['peak_kernel_mb'] <= MEMORY_LIMIT_MB for r in report['notebooks']))
        report['ok'] = ok
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2))
        print(f'report: {args.report}; {"OK" if ok else "FAILED"}', flush=True)
        return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
