"""The course site: built from freshly executed notebooks (FEDTEACH_FAST=1), every page readable without a kernel.

A page fails when it has no figure, holds an error output or a traceback, shows a widget's text repr
(``VBox(children=...``) where a picture of its result belongs, or lacks its Binder and Colab badges.
"""
from __future__ import annotations

import html.parser
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(path.stem for path in (ROOT / 'notebooks').glob('*.ipynb'))
_spec = importlib.util.spec_from_file_location('build_site', ROOT / 'tools' / 'build_site.py')
build_site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_site)

WIDGET_REPR = re.compile(r'\b(?:[HV]?Box|GridBox|Tab|Accordion)\(children=|'
                         r'\b(?:Dropdown|IntSlider|FloatSlider|FloatLogSlider|SelectionSlider|Button|ToggleButtons|'
                         r'Checkbox|Output|IntProgress|FloatProgress|HTML|Label|Text|BoundedIntText|BoundedFloatText)'
                         r'\((?:value|options|description|layout|outputs|children|max|min|style|index)=')


class Page(html.parser.HTMLParser):
    """What a reader sees of a page: its visible text, its images, its links and its elements' classes."""

    def __init__(self, text: str):
        super().__init__()
        self.visible, self.images, self.links, self.classes = [], [], [], []
        self._hidden = 0
        self.feed(text)
        self.text = ' '.join(self.visible)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._hidden += tag in ('script', 'style')
        self.classes.extend((attrs.get('class') or '').split())
        if tag == 'img':
            self.images.append(attrs.get('src', ''))
        if tag == 'a' and attrs.get('href'):
            self.links.append(attrs['href'])

    def handle_endtag(self, tag):
        self._hidden -= tag in ('script', 'style')

    def handle_data(self, data):
        if not self._hidden:
            self.visible.append(data)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('site') / 'html'
    reports = build_site.build(out, fast=True)
    return out, {report['name']: report for report in reports}


def page(site, name) -> Page:
    return Page((site[0] / 'notebooks' / f'{name}.html').read_text(encoding='utf-8'))


def test_sphinx_builds_the_site_without_warnings(site):
    out, reports = site
    assert reports['sphinx']['errors'] == []
    index = Page((out / 'index.html').read_text(encoding='utf-8'))
    listed = list(dict.fromkeys(link for link in index.links if link.startswith('notebooks/')))  # toc and sidebar
    assert listed == [f'notebooks/{n}.html' for n in NOTEBOOKS]
    assert 'FEDTEACH_FAST=1' in index.text  # the site says its numbers come from shortened loops


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_every_notebook_runs_without_an_error(site, name):
    assert site[1][name]['errors'] == []


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_every_page_is_readable_without_a_kernel(site, name):
    shown = page(site, name)
    figures = [src for src in shown.images if '_images/' in src or src.startswith('data:image/')]
    assert figures, f'{name}: no figure on the page'
    assert 'traceback' not in shown.classes and 'Traceback (most recent call last)' not in shown.text, \
        f'{name}: an error output or a traceback is on the page'
    widget_text = WIDGET_REPR.search(shown.text)
    assert widget_text is None, f'{name}: a widget shows as text: {shown.text[widget_text.start():][:80]!r}'


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_every_page_has_binder_and_colab_badges(site, name):
    binder, colab = build_site.badge_urls(name)
    links = page(site, name).links
    assert binder in links and colab in links


def test_equations_are_typeset_by_mathjax(site):
    pages = {name: (site[0] / 'notebooks' / f'{name}.html').read_text(encoding='utf-8') for name in NOTEBOOKS}
    with_math = [name for name, text in pages.items() if 'class="math' in text]
    assert with_math, 'no page has an equation'
    assert all('mathjax' in pages[name].lower() for name in with_math)


def test_build_site_examples():
    """tools/ is outside the doctest paths: its examples run here."""
    import doctest

    assert doctest.testmod(build_site).failed == 0


def test_a_cell_that_runs_too_long_ends_its_notebook_with_an_error_not_the_build(tmp_path):
    import nbformat

    source = tmp_path / 'slow.ipynb'
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# Slow'),
                                                   nbformat.v4.new_code_cell('import time; time.sleep(60)'),
                                                   nbformat.v4.new_code_cell('print("never")')]), source)
    (tmp_path / 'out').mkdir()
    report = build_site.execute(source, tmp_path / 'out' / 'slow.ipynb', dict(build_site.os.environ), timeout=3)
    assert report['errors'] == ['cell 3: KeyboardInterrupt: ',  # the kernel is interrupted (cell 2 is the badges)
                                'stopped: CellTimeoutError: A cell timed out while it was being executed, '
                                'after 3 seconds.']
    executed = nbformat.read(tmp_path / 'out' / 'slow.ipynb', as_version=4)
    assert executed.cells[1].source.startswith('[![Binder]') and not executed.cells[3].outputs
