"""Sphinx configuration of the course site: the executed notebooks rendered by MyST-NB.

Build it with ``python tools/build_site.py`` (from the repository root): that command executes the
notebooks in a fresh kernel each, stages them with this folder in ``build/site-src`` and runs Sphinx
into ``build/site``. Sphinx never executes a notebook itself (``nb_execution_mode = 'off'``).
"""

project = 'fedteach'
author = 'the fedteach authors'
copyright = '2026, the fedteach authors'

extensions = ['myst_nb']
exclude_patterns = ['_build', '**.ipynb_checkpoints']

# Notebooks arrive executed; equations in Markdown cells: $...$, $$...$$ and amsmath environments.
nb_execution_mode = 'off'
myst_enable_extensions = ['dollarmath', 'amsmath']
# A widget whose display also carries a static HTML picture (the dashboard's figure and metrics table,
# the explorer's figure) shows that picture: it needs no kernel. Widgets without one are rendered from
# the widget state embedded at execution.
nb_mime_priority_overrides = [(builder, 'text/html', 5) for builder in ('html', 'dirhtml', 'singlehtml')]
nb_merge_streams = True

html_theme = 'sphinx_book_theme'
html_title = 'fedteach: federated learning, step by step'
html_theme_options = {
    'repository_url': 'https://github.com/fedteach/fedteach',
    'repository_branch': 'main',
    'use_repository_button': True,
    'show_toc_level': 2,
}
