"""Build the course site: execute the notebooks freshly, then render them with Sphinx and MyST-NB.

Usage (from the repository root, in the project's environment, with the ``docs`` extra installed)::

    python tools/build_site.py               # all notebooks at full length -> build/site/index.html
    python tools/build_site.py --fast        # FEDTEACH_FAST=1: shortened loops (what the tests build)
    python tools/build_site.py --only 01 03  # some notebooks (the index lists only those)

Each notebook in ``notebooks/`` runs in a fresh kernel, in a copy under ``build/site-src/notebooks``
(so nothing it writes lands in the repository), with Jupyter's inline plots and the widgets' state
stored in the notebook. A cell that fails does not stop the build: its error shows on the page (also
in a cell tagged to be hidden, such as a hidden check of the text) and the command lists it and exits
with status 1. Sphinx then renders ``docs/`` and the executed copies
into ``build/site``. The data is the offline digits unless ``FEDTEACH_DATA`` says otherwise.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import pathlib
import shutil
import subprocess
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / 'notebooks'
DOCS = ROOT / 'docs'
BUILD = ROOT / 'build'
REPOSITORY = 'fedteach/fedteach'
BINDER = 'https://mybinder.org/v2/gh/{repo}/HEAD?urlpath=lab/tree/notebooks/{name}.ipynb'
COLAB = 'https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name}.ipynb'
BADGES = ('[![Binder](https://mybinder.org/badge_logo.svg)](' + BINDER + ')\n'
          '[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](' + COLAB + ')')
KERNEL_ENV = {
    'MPLBACKEND': 'module://matplotlib_inline.backend_inline',  # what a student's Jupyter uses
    'TF_CPP_MIN_LOG_LEVEL': '2',  # as fedteach sets it, also for a notebook that imports TensorFlow first
}
HIDING_TAGS = ('remove-cell', 'remove_cell', 'remove-input', 'remove_input', 'remove-output', 'remove_output')


def badge_urls(name: str) -> tuple[str, str]:
    """The Binder and Colab links of the notebook ``name`` (without ``.ipynb``).

    Example:
        >>> binder, colab = badge_urls('01_federated_data')
        >>> binder
        'https://mybinder.org/v2/gh/fedteach/fedteach/HEAD?urlpath=lab/tree/notebooks/01_federated_data.ipynb'
        >>> colab
        'https://colab.research.google.com/github/fedteach/fedteach/blob/main/notebooks/01_federated_data.ipynb'
    """
    return BINDER.format(repo=REPOSITORY, name=name), COLAB.format(repo=REPOSITORY, name=name)


def with_badges(notebook: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The notebook with Binder and Colab badges after its title, unless a Markdown cell has both links.

    Example:
        >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# 1. Data')])
        >>> [cell.source.startswith('[![Binder]') for cell in with_badges(nb, '01_x').cells]
        [False, True]
        >>> len(with_badges(with_badges(nb, '01_x'), '01_x').cells)
        2
    """
    links = badge_urls(name)
    if any(cell.cell_type == 'markdown' and all(link in cell.source for link in links) for cell in notebook.cells):
        return notebook
    notebook = nbformat.from_dict(notebook)
    title = 1 if notebook.cells and notebook.cells[0].source.lstrip().startswith('# ') else 0
    notebook.cells.insert(title, nbformat.v4.new_markdown_cell(BADGES.format(repo=REPOSITORY, name=name)))
    return notebook


def errors_of(notebook: nbformat.NotebookNode) -> list[str]:
    """One line per error output of an executed notebook: ``cell N: Name: message``.

    Example:
        >>> cell = nbformat.v4.new_code_cell('1 / 0', outputs=[nbformat.v4.new_output(
        ...     'error', ename='ZeroDivisionError', evalue='division by zero', traceback=[])])
        >>> errors_of(nbformat.v4.new_notebook(cells=[cell]))
        ['cell 1: ZeroDivisionError: division by zero']
    """
    return [f'cell {number}: {output.ename}: {output.evalue}'
            for number, cell in enumerate(notebook.cells, start=1) if cell.cell_type == 'code'
            for output in cell.get('outputs', []) if output.output_type == 'error']


def execute(source: pathlib.Path, destination: pathlib.Path, env: dict[str, str], timeout: int = 900) -> dict:
    """Runs the notebook ``source`` in a fresh kernel with the environment ``env``, working in
    ``destination``'s folder, and writes it there.

    Returns ``{'name', 'seconds', 'errors'}``; errors are kept as outputs, not raised. A cell that runs
    longer than ``timeout`` seconds, or a kernel that dies, ends the notebook there, with an error.
    """
    notebook = with_badges(nbformat.read(source, as_version=4), source.stem)
    nbformat.write(notebook, destination)  # otter-grader's checks read the notebook they run in
    start = time.perf_counter()
    client = NotebookClient(notebook, timeout=timeout, kernel_name='python3', allow_errors=True,
                            store_widget_state=True, resources={'metadata': {'path': str(destination.parent)}})
    stopped = []
    try:
        client.execute(env=env)
    except (CellTimeoutError, DeadKernelError) as error:
        stopped = [f'stopped: {type(error).__name__}: {str(error).splitlines()[0]}']
    shown = show_failed_cells(notebook)
    nbformat.write(shown, destination)
    return {'name': source.stem, 'seconds': time.perf_counter() - start, 'errors': errors_of(shown) + stopped}


def show_failed_cells(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with a failed cell's hiding tags removed: a hidden check of the text that fails shows on the page.

    Example:
        >>> error = nbformat.v4.new_output('error', ename='AssertionError', evalue='', traceback=[])
        >>> cell = nbformat.v4.new_code_cell('assert False', outputs=[error], metadata={'tags': ['remove-cell']})
        >>> show_failed_cells(nbformat.v4.new_notebook(cells=[cell])).cells[0].metadata.tags
        []
    """
    notebook = nbformat.from_dict(notebook)
    for cell in notebook.cells:
        if any(output.output_type == 'error' for output in cell.get('outputs', [])) and 'tags' in cell.metadata:
            cell.metadata.tags = [tag for tag in cell.metadata.tags if tag not in HIDING_TAGS]
    return notebook


def build(out: pathlib.Path = BUILD / 'site', *, fast: bool = False, only: list[str] | None = None,
          jobs: int = 2, timeout: int = 900) -> list[dict]:
    """Executes the notebooks (``only`` those whose names start with one of its prefixes) and builds the site.

    ``timeout`` is the most seconds one cell may run (see :func:`execute`).

    Returns one report per notebook (see :func:`execute`) and one for Sphinx (``name='sphinx'``).
    """
    notebooks = sorted(p for p in NOTEBOOKS.glob('*.ipynb') if not only or p.name.startswith(tuple(only)))
    if not notebooks:
        raise SystemExit(f'no notebook in {NOTEBOOKS} matches {only}; names start with two digits, e.g. 01_ or 10_.')
    source = out.parent / f'{out.name}-src'
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns('_build'))
    (source / 'notebooks').mkdir()
    env = dict(os.environ, **KERNEL_ENV, FEDTEACH_DATA=os.environ.get('FEDTEACH_DATA', 'offline'))
    env.pop('FEDTEACH_FAST', None)
    if fast:
        env['FEDTEACH_FAST'] = '1'
    with (source / 'index.md').open('a') as index:
        index.write(f'\nBuilt on {time.strftime("%Y-%m-%d")} with the data `FEDTEACH_DATA={env["FEDTEACH_DATA"]}`'
                    + (' and shortened loops (`FEDTEACH_FAST=1`): numbers differ from a full run.\n' if fast
                       else '.\n'))
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        reports = list(pool.map(lambda path: execute(path, source / 'notebooks' / path.name, env, timeout), notebooks))
    start = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    partial = ['-D', 'suppress_warnings=myst.xref_missing'] if only else []  # links to notebooks left out
    sphinx = subprocess.run([sys.executable, '-m', 'sphinx', '-b', 'html', '-q', '-W', '--keep-going', *partial,
                             str(source), str(out)], capture_output=True, text=True)
    warnings = [line for line in (sphinx.stderr + sphinx.stdout).splitlines() if line.strip()]
    reports.append({'name': 'sphinx', 'seconds': time.perf_counter() - start,
                    'errors': warnings if sphinx.returncode else []})
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--fast', action='store_true', help='shortened loops (FEDTEACH_FAST=1), as the tests build')
    parser.add_argument('--only', nargs='+', metavar='PREFIX', help='notebooks whose names start so (e.g. 01 03)')
    parser.add_argument('--jobs', type=int, default=2, help='notebooks executed at once (default 2)')
    parser.add_argument('--timeout', type=int, default=900, help='most seconds one cell may run (default 900)')
    parser.add_argument('--out', type=pathlib.Path, default=BUILD / 'site', help='output folder (build/site)')
    args = parser.parse_args(argv)
    start = time.perf_counter()
    reports = build(args.out, fast=args.fast, only=args.only, jobs=args.jobs, timeout=args.timeout)
    for report in reports:
        print(f"{report['name']:<48} {report['seconds']:6.1f} s  "
              f"{'ok' if not report['errors'] else str(len(report['errors'])) + ' error(s)'}")
        for error in report['errors']:
            print(f'    {error}')
    print(f'{time.perf_counter() - start:.0f} s in all; open {args.out / "index.html"}')
    return 1 if any(report['errors'] for report in reports) else 0


if __name__ == '__main__':
    sys.exit(main())
