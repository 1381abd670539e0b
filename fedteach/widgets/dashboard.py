"""The training dashboard: Run / Stop / Reset, progress, convergence plot beside the settings, metrics."""
from __future__ import annotations

import html
import re
import time

import ipywidgets as w
from matplotlib.lines import Line2D

from fedteach.experiment import ExperimentConfig
from fedteach.plots import plot_convergence
from fedteach.rounds import DivergenceError
from fedteach.widgets._display import (Snapshot, error_html, figure_png, image_html, show_figures, shows_errors,
                                       start_thread, widget_bundle)
from fedteach.widgets.controller import TrainingController
from fedteach.widgets.panel import HyperparameterPanel

__all__ = ['REDRAW_INTERVAL', 'TrainingDashboard', 'metrics_table']

_TABLE_ROWS = 5
REDRAW_INTERVAL = 0.25
"""Seconds between redraws of the plot during a Run (its first and last rounds are always drawn at once)."""
_FIGSIZE = (5.6, 3.8)  # inches at 100 dpi: beside the settings on a 1366x768 screen, file browser open


class TrainingDashboard:
    """Federated training in the notebook without freezing it.

    Run trains ``rounds per Run`` rounds in a worker thread, updating the
    progress bar, the round counter and a table of the last metrics after
    every round, and the convergence plot of all runs after the Run's first
    round, its last, and in between at most every :data:`REDRAW_INTERVAL`
    seconds (drawing takes about 0.14 s, a round of the linear model 0.01 s).
    Stop ends the Run after the current round, and Run resumes it (round 3 of 100 goes on to 100).
    Changing only "rounds per Run" keeps training the same run; other changed
    settings start a new run (a new colour on the plot), which continues
    from the current model or restarts from fresh weights, as the
    "Continue / Restart" choice says, and the status line says which and
    why. Reset forgets all runs. A diverging round shows a message and
    keeps the last good model.

    The plot sits beside the settings (both fit a 1366x768 screen); a
    narrow window puts the settings under it.

    Args:
        train: training ``ClientData``.
        test: test ``ClientData``.
        config: initial settings (default :class:`~fedteach.experiment.ExperimentConfig`).
        controls: ``'basic'`` (default: what notebook 3 teaches) or ``'all'``
            (adds the model, server optimizer, FedProx, privacy and compression
            settings, folded); see :class:`~fedteach.widgets.HyperparameterPanel`.

    Attributes:
        controller: the :class:`~fedteach.widgets.TrainingController` (runs, history).
        panel: the :class:`~fedteach.widgets.HyperparameterPanel`.
        run_button, stop_button, reset_button, mode, progress, round_label,
        metrics, status, error, plot_output: the widgets.
        figure: the last convergence figure drawn.
        widget: the root widget (``display(dashboard)`` or ``dashboard`` alone in a cell shows it).

    Example:
        >>> import fedteach as ft
        >>> from fedteach.experiment import ExperimentConfig
        >>> train, test = ft.load_offline_digits(num_clients=5)
        >>> dashboard = TrainingDashboard(train, test, ExperimentConfig(local_epochs=1, rounds=2))
        >>> dashboard.run(block=True)  # in a notebook: the figure and the table, as static outputs
        round 2 / 2 of run 1 (model trained 2 rounds)
        >>> dashboard.progress.value, dashboard.status.value
        (2, 'Done: run 1 (lr=0.02, 3 clients, 1 epoch) trained 2 rounds.')
    """

    def __init__(self, train, test, config: ExperimentConfig | None = None, controls: str = 'basic'):
        self.controller = TrainingController(train, test)
        self.panel = HyperparameterPanel(config, max_clients=min(len(train.client_ids), 100), controls=controls)
        self.figure, self.thread, self.last_error = None, None, None
        self._drawn = None  # (when, after how many rounds of the Run) the plot was last drawn during a Run
        self.run_button = w.Button(description='Run', button_style='success', icon='play',
                                   tooltip='Train the rounds set in "rounds per Run" (or resume a stopped Run)')
        self.stop_button = w.Button(description='Stop', button_style='danger', icon='stop', disabled=True,
                                    tooltip='Stop after the current round; Run resumes')
        self.reset_button = w.Button(description='Reset', icon='refresh', tooltip='Forget all runs')
        self.mode = w.ToggleButtons(options=[('Continue', 'continue'), ('Restart', 'restart')], value='continue',
                                    description='new settings:', tooltip='What Run does after a settings change',
                                    tooltips=['Run goes on from the current model',
                                              'Run starts a new model from scratch'],
                                    style={'description_width': '7em', 'button_width': '7em'})
        self.progress = w.IntProgress(value=0, min=0, max=self.panel.config.rounds, tooltip='rounds of this Run',
                                      layout=w.Layout(width='12em'))
        self.round_label = w.Label('no rounds yet', tooltip='')
        self.metrics = w.HTML(tooltip='')
        self.status = w.HTML(tooltip='')
        self.error = w.HTML(tooltip='')
        self.plot_output = w.Output(layout=w.Layout(width=f'{_FIGSIZE[0] * 100 + 4:.0f}px'))
        # A settings change compiles its round in the background (seconds for a new shape or model), before Run.
        self.panel.on_change(self._warm_up)
        self.mode.observe(lambda _: self._warm_up(), names='value')
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.reset_button.on_click(lambda _: self.reset())
        for button in (self.run_button, self.stop_button, self.reset_button):
            button.layout.width = '6.5em'
        wrap = w.Layout(flex_flow='row wrap', align_items='center')
        self.widget = w.VBox([
            w.HBox([self.run_button, self.stop_button, self.reset_button, self.progress, self.round_label],
                   layout=wrap),
            self.status, self.error,
            w.HBox([self.plot_output, w.VBox([self.panel.widget, self.mode])], layout=wrap),
            self.metrics])
        self._redraw()

    def _warm_up(self) -> None:
        """Asks the controller to compile the panel's settings ahead of Run; an invalid value waits for Run."""
        try:
            config = self.panel.config
        except ValueError:
            return  # Run shows the message
        self.controller.warm_up(config, self.mode.value)

    @property
    def running(self) -> bool:
        """True while rounds are training in the worker thread."""
        return self.thread is not None and self.thread.is_alive()

    @shows_errors
    def run(self, block: bool = False) -> Snapshot | None:
        """Trains with the panel's settings in a worker thread (Run button).

        Args:
            block: wait until the Run ends and return :meth:`snapshot` (for
                notebooks read without a kernel, and for tests).
        """
        if self.running:
            self.status.value = 'Already running: press Stop first.'
            return None
        self.error.value, self.last_error = '', None
        config = self.panel.config  # a ValueError here is shown by shows_errors
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.status.value = 'Preparing the model...'
        # The worker runs in a copy of this cell's (or click's) context: see start_thread.
        self.thread = start_thread(self._work, config, self.mode.value, name='fedteach-dashboard')
        if block:
            self.wait()
            return self.snapshot()
        return None

    def wait(self, timeout: float | None = None) -> None:
        """Waits for the worker thread to finish (for tests and nbval)."""
        if self.thread is not None:
            self.thread.join(timeout)

    def stop(self) -> None:
        """Asks the run to stop after the current round (Stop button)."""
        if self.running:
            self.controller.stop()
            self.status.value = 'Stopping after the current round...'

    @shows_errors
    def reset(self) -> None:
        """Forgets all runs and clears the plot (Reset button); ignored while running."""
        if self.running:
            self.status.value = 'Stop the run before Reset.'
            return
        self.controller.reset()
        self.progress.value, self.progress.bar_style = 0, ''
        self.round_label.value = 'no rounds yet'
        self.status.value, self.error.value, self.metrics.value = 'All runs cleared.', '', ''
        self._redraw()

    def snapshot(self) -> Snapshot:
        """What the dashboard shows now, as outputs that need no kernel: the plot, the status and the table.

        Example:
            >>> import fedteach as ft
            >>> train, test = ft.load_offline_digits(num_clients=5)
            >>> snapshot = TrainingDashboard(train, test).snapshot()
            >>> snapshot.text, snapshot.png[:4]
            ('no rounds yet', b'\\x89PNG')
        """
        parts = [f'<div>{self.status.value}</div>' if self.status.value else '', self.error.value,
                 self.metrics.value]
        return Snapshot(self.round_label.value, figure_png(self.figure), ''.join(parts))

    def _work(self, config: ExperimentConfig, mode: str) -> None:
        controller = self.controller
        try:
            experiment = controller.prepare(config, mode)
            self.progress.max, self.progress.value = controller.rounds_total, controller.rounds_done
            self.progress.bar_style = ''
            self.status.value = html.escape(controller.note) + ' Training...'
            self._drawn = None
            try:
                controller.run(callback=lambda entry: self._show_round())
            finally:  # the last round, or where Stop or a divergence ended the Run, if not drawn yet
                if self._drawn is not None and self._drawn[1] != controller.rounds_done:
                    self._redraw()
            total = controller.rounds_total
            if controller.unfinished:
                self.status.value = (f'Stopped after round {experiment.round_num} ({controller.rounds_done} of '
                                     f'{total}). Press Run to continue.')
                self.progress.bar_style = 'warning'
            else:
                done = f'Done: {experiment.name} trained {total} rounds.'
                self.status.value = html.escape(f'{controller.note} {done}' if controller.new_run else done)
                self.progress.bar_style = 'success'
            warning = next((e['warning'] for e in experiment.history if 'warning' in e), None)
            if warning:
                self.status.value += f' <b>Warning:</b> {html.escape(warning)}'
                self.progress.bar_style = 'warning'
        except DivergenceError as error:
            self.last_error = error
            self.progress.bar_style = 'danger'
            self.status.value = ''
            self.error.value = error_html(error, friendly=(
                f'Training diverged (the loss became NaN or infinite): {error} '
                'Lower the client or server learning rate and press Run, with "Restart" if the model is ruined.'))
        except Exception as error:  # noqa: BLE001 - shown, since thread exceptions are otherwise lost
            self.last_error = error
            self.progress.bar_style = 'danger'
            self.status.value = ''
            self.error.value = error_html(error)
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True

    def _show_round(self) -> None:
        controller, experiment = self.controller, self.controller.experiment
        self.progress.value = controller.rounds_done
        number = experiment.name.split(' (')[0]
        self.round_label.value = (f'round {controller.rounds_done} / {controller.rounds_total} of {number} '
                                  f'(model trained {experiment.round_num} rounds)')
        self.metrics.value = metrics_table(experiment.history[-_TABLE_ROWS:])
        if self._drawn is None or time.monotonic() - self._drawn[0] >= REDRAW_INTERVAL:  # _work draws the last
            self._redraw()
            self._drawn = (time.monotonic(), controller.rounds_done)

    def _redraw(self) -> None:
        self.figure = plot_convergence(self.controller.history, figsize=_FIGSIZE)
        _legend_per_run(self.figure)
        show_figures(self.plot_output, self.figure)

    def _repr_mimebundle_(self, **kwargs):
        text = f'Training dashboard: {self.round_label.value}'
        static = f'<p><i>{html.escape(text)}</i> (the interactive dashboard needs a running kernel)</p>'
        if self.controller.history:
            static += image_html(figure_png(self.figure), 'convergence plot') + self.metrics.value
        return widget_bundle(self.widget, text, static, **kwargs)


def _legend_per_run(fig) -> None:
    """One legend entry per run (its colour, its settings), two columns when they fit; the caption tells the
    line styles, and the line joining a continued run to the one before shows where it started."""
    for legend in list(fig.legends):
        legend.remove()
    handles = [Line2D([], [], color=line.get_color(), linewidth=2,
                      label=re.sub(r', from round \d+\)$', ')', line.get_label()[:-len(' train')]))
               for line in fig.axes[0].lines if line.get_label().endswith(' train')]
    if handles:
        columns = 2 if len(handles) > 1 and max(len(h.get_label()) for h in handles) <= 48 else 1
        fig.legend(handles=handles, loc='outside lower center', ncols=columns, fontsize='small', frameon=False)


def metrics_table(entries: list[dict]) -> str:
    """An HTML table of history entries (round, train and evaluation metrics, examples, seconds).

    Example:
        >>> print(metrics_table([{'run': 'run 1', 'round': 3, 'train_loss': 1.0, 'train_accuracy': 0.5,
        ...                       'eval_loss': None, 'eval_accuracy': None, 'num_examples': 90,
        ...                       'seconds': 0.25}]))  # doctest: +ELLIPSIS
        <table ...><tr><td>3</td><td>1.0000</td><td>0.500</td><td>-</td><td>-</td><td>90</td><td>0.25</td></tr></table>
    """
    def number(value, digits):
        return '-' if value is None else f'{value:.{digits}f}'

    head = ''.join(f'<th style="padding:0 8px">{h}</th>' for h in (
        'round', 'train loss', 'train accuracy', 'eval loss', 'eval accuracy', 'examples', 'seconds'))
    rows = ''.join(
        f'<tr><td>{e["round"]}</td><td>{number(e["train_loss"], 4)}</td><td>{number(e["train_accuracy"], 3)}</td>'
        f'<td>{number(e["eval_loss"], 4)}</td><td>{number(e["eval_accuracy"], 3)}</td>'
        f'<td>{e["num_examples"]}</td><td>{number(e["seconds"], 2)}</td></tr>' for e in entries)
    return f'<table style="text-align:right;font-family:monospace"><tr>{head}</tr>{rows}</table>'
