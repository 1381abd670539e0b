"""The client explorer: pick a writer, see their samples and label histogram."""
from __future__ import annotations

import html

import ipywidgets as w
import numpy as np
from fedteach.plots import Figure, plot_label_histogram, plot_samples
from fedteach.widgets._display import shows_errors, show_figures

__all__ = ['ClientExplorer']


class ClientExplorer:
    """A dropdown of clients and, for the selected one, a grid of samples and a label histogram.

    Args:
        client_data: the federated dataset (tutorial element structure).
        num_samples: how many samples to show.
        num_classes: number of labels.

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
    """

    def __init__(self, client_data, num_samples: int = 10, num_classes: int = 10):
        self.client_data, self.num_samples, self.num_classes = client_data, num_samples, num_classes
        self.figure, self.last_error = None, None
        self.dropdown = w.Dropdown(options=list(client_data.client_ids), description='writer')
        self.info = w.HTML()
        self.error = w.HTML()
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

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)
