"""Thread-safe helpers to show figures and errors in ipywidgets."""
from __future__ import annotations

import base64
import functools
import html
import io
import traceback


def figure_output(fig, dpi: int = 100) -> dict:
    """A figure as one Jupyter ``display_data`` output (PNG), ready for ``Output.outputs``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=dpi)
    return {'output_type': 'display_data',
            'data': {'image/png': base64.b64encode(buffer.getvalue()).decode('ascii'),
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
