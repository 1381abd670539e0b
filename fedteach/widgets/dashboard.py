"""The training dashboard: hyperparameters, Run / Stop / Reset, progress, metrics and convergence plot."""
from __future__ import annotations

import html
import threading

import ipywidgets as w

from fedteach.experiment import ExperimentConfig
from fedteach.plots import plot_convergence
from fedteach.rounds import DivergenceError
from fedteach.widgets._display import error_html, show_figures, shows_errors
from fedteach.widgets.controller import TrainingController
from fedteach.widgets.panel import HyperparameterPanel

__all__ = ['TrainingDashboard']

_TABLE_ROWS = 5


class TrainingDashboard:
    """Federated training in the notebook without freezing it.

    Run trains ``rounds per Run`` rounds in a worker thread, redrawing the
    progress bar, the round counter, a table of the last metrics and the
    convergence plot of all runs after every round. Stop ends the run after
    the current round; Reset forgets all runs. With changed settings, Run
    continues from the current model or restarts from fresh weights, as the
    "Continue / Restart" choice says; every such change is a new run on the
    plot. A diverging round shows a message and keeps the last good model.

    Args:
        train: training ``ClientData``.
        test: test ``ClientData``.
        config: initial settings (default :class:`~fedteach.experiment.ExperimentConfig`).

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
        >>> dashboard.run(block=True)
        >>> dashboard.progress.value, dashboard.round_label.value
        (2, 'round 2 / 2 of run 1 (model trained 2 rounds)')
        >>> dashboard  # doctest: +SKIP
    """

    def __init__(self, train, test, config: ExperimentConfig | None = None):
        self.controller = TrainingController(train, test)
        self.panel = HyperparameterPanel(config, max_clients=min(len(train.client_ids), 100))
        self.figure, self.thread, self.last_error = None, None, None
        self.run_button = w.Button(description='Run', button_style='success', icon='play',
                                   tooltip='Train the rounds set in "rounds per Run"')
        self.stop_button = w.Button(description='Stop', button_style='danger', icon='stop', disabled=True,
                                    tooltip='Stop after the current round')
        self.reset_button = w.Button(description='Reset', icon='refresh', tooltip='Forget all runs')
        self.mode = w.ToggleButtons(options=[('Continue', 'continue'), ('Restart', 'restart')], value='continue',
                                    description='new settings:',
                                    tooltips=['Run goes on from the current model',
                                              'Run starts a new model from scratch'])
        self.progress = w.IntProgress(value=0, min=0, max=self.panel.config.rounds, description='progress')
        self.round_label = w.Label('no rounds yet')
        self.metrics = w.HTML()
        self.status = w.HTML()
        self.error = w.HTML()
        self.plot_output = w.Output()
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.reset_button.on_click(lambda _: self.reset())
        self.widget = w.VBox([
            self.panel.widget,
            w.HBox([self.run_button, self.stop_button, self.reset_button]),
            self.mode,
            w.HBox([self.progress, self.round_label]),
            self.status, self.error, self.metrics, self.plot_output])
        self._redraw()

    @property
    def running(self) -> bool:
        """True while rounds are training in the worker thread."""
        return self.thread is not None and self.thread.is_alive()

    @shows_errors
    def run(self, block: bool = False) -> None:
        """Trains with the panel's settings in a worker thread (Run button); ``block=True`` waits for it."""
        if self.running:
            self.status.value = 'Already running: press Stop first.'
            return
        self.error.value, self.last_error = '', None
        config = self.panel.config  # a ValueError here is shown by shows_errors
        mode = self.mode.value
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.progress.max, self.progress.value, self.progress.bar_style = config.rounds, 0, ''
        self.status.value = 'Preparing the model...'
        self.thread = threading.Thread(target=self._work, args=(config, mode), daemon=True,
                                       name='fedteach-dashboard')
        self.thread.start()
        if block:
            self.wait()

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

    def _work(self, config: ExperimentConfig, mode: str) -> None:
        done = 0
        try:
            experiment = self.controller.prepare(config, mode)
            self.status.value = html.escape(self.controller.note) + ' Training...'

            def on_round(entry):
                nonlocal done
                done += 1
                self._show_round(entry, done, config.rounds)

            self.controller.run(callback=on_round)
            if self.controller.stop_requested and done < config.rounds:
                self.status.value = (f'Stopped after round {experiment.round_num} ({done} of {config.rounds}). '
                                     'Press Run to continue.')
                self.progress.bar_style = 'warning'
            else:
                self.status.value = f'Done: {experiment.name} trained {done} rounds.'
                self.progress.bar_style = 'success'
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

    def _show_round(self, entry: dict, done: int, total: int) -> None:
        experiment = self.controller.experiment
        self.progress.value = done
        number = experiment.name.split(' (')[0]
        self.round_label.value = f'round {done} / {total} of {number} ' \
                                 f'(model trained {experiment.round_num} rounds)'
        self.metrics.value = metrics_table(experiment.history[-_TABLE_ROWS:])
        self._redraw()

    def _redraw(self) -> None:
        self.figure = plot_convergence(self.controller.history, figsize=(11, 4.6))
        show_figures(self.plot_output, self.figure)

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)


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
