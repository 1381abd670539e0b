"""The client explorer: pick a writer, see their samples and label histogram."""
from __future__ import annotations

import html
import re

import ipywidgets as w
import numpy as np
from fedteach.plots import Figure, plot_label_histogram, plot_samples
from fedteach.widgets._display import (Snapshot, figure_png, image_html, show_figures, shows_errors,
                                       widget_bundle)

__all__ = ['ClientExplorer']


class ClientExplorer:
    """A dropdown of clients and, for the selected one, a grid of samples and a label histogram.

    Args:
        client_data: the federated dataset (tutorial element structure).
        num_samples: how many samples to show.
        num_classes: number of labels.

    Displayed in a notebook, it is the live widget; without a kernel (a
    static page, an untrusted notebook) the same output shows the current
    figure instead. :meth:`snapshot` gives that figure as an ordinary output.

    Attributes:
        dropdown: the client chooser; changing its value redraws.
        output: the ``Output`` showing the figure.
        info: an HTML line with the client's size and labels.
        figure: the last figure drawn.

    Example:
        >>> import fedteach as ft
        >>> train, _ = ft.load_offline_digits(num_clients=4)
        >>> explorer = ClientExplorer(train)
        >>> explorer.select('writer_002')
        >>> explorer.client_id, len(explorer.output.outputs)
        ('writer_002', 1)
        >>> explorer.snapshot()
        writer_002: 39 examples, 7 different labels (0, 1, 2, 3, 5, 7, 9)
    """

    def __init__(self, client_data, num_samples: int = 10, num_classes: int = 10):
        self.client_data, self.num_samples, self.num_classes = client_data, num_samples, num_classes
        self.figure, self.last_error = None, None
        self.dropdown = w.Dropdown(options=list(client_data.client_ids), description='writer',
                                   tooltip="Pick a writer (a client) to see their samples and labels")
        self.info = w.HTML(tooltip='')
        self.error = w.HTML(tooltip='')
        self.output = w.Output()
        self.widget = w.VBox([self.dropdown, self.info, self.output, self.error])
        self.dropdown.observe(self._on_change, names='value')
        self.redraw()

    @property
    def client_id(self) -> str:
        """The selected client."""
        return self.dropdown.value

    def select(self, client_id: str) -> None:
        """Selects ``client_id`` and redraws."""
        if client_id not in self.dropdown.options:
            raise ValueError(f'unknown client {client_id!r}; e.g. {list(self.dropdown.options[:3])}.')
        if client_id == self.dropdown.value:
            self.redraw()
        else:
            self.dropdown.value = client_id  # the observer redraws

    def _on_change(self, change):
        self.redraw()

    @shows_errors
    def redraw(self) -> None:
        """Draws the selected client's samples and label histogram into ``output``."""
        self.error.value = ''
        client_id = self.client_id
        labels = np.asarray(self.client_data.client_arrays(client_id)['label']).reshape(-1)
        present = sorted(set(labels.tolist()))
        self.info.value = (f'<b>{html.escape(client_id)}</b>: {len(labels)} examples, '
                           f'{len(present)} different labels ({", ".join(map(str, present))})')
        fig = Figure(figsize=(11, 3.6), layout='constrained')
        left, right = fig.subfigures(1, 2, width_ratios=[1.55, 1])
        plot_samples(self.client_data, client_id, n=self.num_samples, fig=left)
        plot_label_histogram(self.client_data, client_id, self.num_classes, ax=right.add_subplot())
        self.figure = fig
        show_figures(self.output, fig)

    def snapshot(self) -> Snapshot:
        """The current figure and the client's line, as outputs that need no kernel (for static pages)."""
        return Snapshot(html.unescape(re.sub('<[^>]+>', '', self.info.value)), figure_png(self.figure))

    def _repr_mimebundle_(self, **kwargs):
        text = f'Client explorer: {self.client_id}'
        static = f'<p>{self.info.value}</p>' + image_html(figure_png(self.figure), f'samples of {self.client_id}')
        return widget_bundle(self.widget, text, static, **kwargs)
