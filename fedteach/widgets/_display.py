"""Helpers for the widgets: figures and errors in Output widgets from any thread, static snapshots."""
from __future__ import annotations

import base64
import contextvars
import functools
import html
import io
import threading
import traceback


def figure_png(fig, dpi: int = 100) -> bytes:
    """A figure as PNG bytes.

    Example:
        >>> from matplotlib.figure import Figure
        >>> figure_png(Figure(figsize=(1, 1)))[:4]
        b'\\x89PNG'
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=dpi)
    return buffer.getvalue()


def figure_output(fig, dpi: int = 100) -> dict:
    """A figure as one Jupyter ``display_data`` output (PNG), ready for ``Output.outputs``."""
    return {'output_type': 'display_data',
            'data': {'image/png': base64.b64encode(figure_png(fig, dpi)).decode('ascii'),
                     'text/plain': f'<Figure size {fig.get_figwidth():g}x{fig.get_figheight():g} inches>'},
            'metadata': {}}


def show_figures(output, *figures) -> None:
    """Replaces what ``output`` shows with ``figures``, in one step.

    Setting ``Output.outputs`` (what ``Output.append_display_data`` does)
    works from any thread, unlike ``with output:``; replacing the tuple at
    once is ``clear_output(wait=True)`` + ``display`` without a flicker. The
    figures are not pyplot figures, so nothing needs closing.
    """
    output.outputs = tuple(figure_output(fig) for fig in figures)


def start_thread(target, *args, name: str) -> threading.Thread:
    """Starts a daemon thread that runs ``target(*args)`` in a copy of the caller's context variables.

    A new thread starts with empty context variables. ipykernel 7.0 keeps
    the message a widget update answers in one (``shell_parent``), so
    widget updates from a plain thread failed there with ``LookupError``;
    a copy taken here, in the cell or callback that starts the thread,
    works with every ipykernel.

    Example:
        >>> import contextvars
        >>> marker = contextvars.ContextVar('marker')
        >>> token = marker.set('from the caller')
        >>> seen = []
        >>> start_thread(lambda: seen.append(marker.get()), name='example').join()
        >>> seen
        ['from the caller']
    """
    thread = threading.Thread(target=contextvars.copy_context().run, args=(target, *args), daemon=True, name=name)
    thread.start()
    return thread


def error_html(error: BaseException, friendly: str | None = None) -> str:
    """An error as HTML: a short message and the traceback, folded."""
    trace = ''.join(traceback.format_exception(type(error), error, error.__traceback__))
    message = friendly or f'{type(error).__name__}: {error}'
    return (f'<div style="color:#B00020"><b>{html.escape(message)}</b>'
            f'<details><summary>details</summary><pre style="font-size:small">{html.escape(trace)}</pre>'
            '</details></div>')


def shows_errors(method):
    """Decorates a widget callback so an exception is shown in ``self.error`` (an HTML widget).

    JupyterLab drops exceptions raised in widget callbacks silently.
    """
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - shown to the student instead of lost
            self.last_error = error
            self.error.value = error_html(error)
            return None
    return wrapper


def image_html(png: bytes, alt: str) -> str:
    """PNG bytes as an HTML ``<img>`` (a data URL)."""
    return (f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" '
            f'alt="{html.escape(alt)}" style="max-width:100%">')


def widget_bundle(widget, text: str, static_html: str, **kwargs) -> dict:
    """A widget's display data: the live widget, with a static HTML picture and a sentence as fallbacks.

    JupyterLab with a kernel renders the widget; a reader without one (a
    static page, an untrusted notebook) sees ``static_html``; plain text
    shows ``text`` instead of the widget's ``VBox(children=...`` repr.
    """
    data = dict(widget._repr_mimebundle_(**kwargs) or {})
    data.update({'text/plain': text, 'text/html': static_html})
    return data


class Snapshot:
    """What a widget shows, as ordinary outputs that need no kernel: a figure (PNG) and some HTML.

    In a notebook, a cell ending with a snapshot displays the figure and the
    HTML as separate outputs, so nbconvert, a static site or GitHub shows
    them; ``repr`` gives the one-line ``text``.

    Args:
        text: one line saying what it shows.
        png: the figure as PNG bytes (or None).
        html: HTML shown after the figure (e.g. a table), or ''.

    Example:
        >>> snapshot = Snapshot('round 2 / 2 of run 1', html='<p>done</p>')
        >>> snapshot
        round 2 / 2 of run 1
        >>> [sorted(data) for data in snapshot.outputs()]
        [['text/html', 'text/plain']]
    """

    def __init__(self, text: str, png: bytes | None = None, html: str = ''):
        self.text, self.png, self.html = text, png, html

    def outputs(self) -> list[dict]:
        """The display data, one dict of mimetype -> data per output."""
        outputs = []
        if self.png is not None:
            outputs.append({'image/png': base64.b64encode(self.png).decode('ascii'), 'text/plain': self.text})
        if self.html:
            outputs.append({'text/html': self.html, 'text/plain': self.text})
        return outputs

    def _ipython_display_(self):
        from IPython.display import display
        for data in self.outputs():
            display(data, raw=True)

    def __repr__(self) -> str:
        return self.text
