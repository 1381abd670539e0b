"""The hyperparameter panel: one input per ExperimentConfig field."""
from __future__ import annotations

import math

import ipywidgets as w

from fedteach.experiment import MODELS, ExperimentConfig

__all__ = ['HyperparameterPanel']

_STYLE = {'description_width': '11em'}
_LAYOUT = w.Layout(width='27em')


class HyperparameterPanel:
    """Sliders and inputs for every :class:`~fedteach.experiment.ExperimentConfig` field.

    ``widgets`` maps each field name to its widget (``panel.widgets['clients_per_round'].value = 4``);
    ``config`` builds the ExperimentConfig from their values (and sets them).

    Args:
        config: the initial settings.
        max_clients: the largest choice of clients per round (e.g. the number of clients).

    Example:
        >>> panel = HyperparameterPanel(ExperimentConfig(rounds=5))
        >>> panel.widgets['clients_per_round'].value = 4
        >>> panel.widgets['client_learning_rate'].value = 0.1
        >>> panel.config.clients_per_round, panel.config.client_learning_rate, panel.config.rounds
        (4, 0.1, 5)
    """

    def __init__(self, config: ExperimentConfig | None = None, max_clients: int = 50):
        config = ExperimentConfig() if config is None else config
        max_clients = max(int(max_clients), config.clients_per_round)

        def log_slider(description, low, high, value):
            return w.FloatLogSlider(value=value, base=10, min=min(low, math.floor(math.log10(value))),
                                    max=max(high, math.ceil(math.log10(value))), step=0.1,
                                    readout_format='.3g', description=description, style=_STYLE, layout=_LAYOUT)

        def int_slider(description, low, high, value):
            return w.IntSlider(value=value, min=low, max=max(high, value), description=description,
                               style=_STYLE, layout=_LAYOUT)

        def int_box(description, low, high, value):
            return w.BoundedIntText(value=value, min=low, max=max(high, value), description=description,
                                    style=_STYLE, layout=_LAYOUT)

        self.widgets = {
            'clients_per_round': int_slider('clients per round', 1, max_clients, config.clients_per_round),
            'client_learning_rate': log_slider('client learning rate', -4, 1, config.client_learning_rate),
            'server_learning_rate': log_slider('server learning rate', -2, 1, config.server_learning_rate),
            'local_epochs': int_slider('local epochs', 1, 20, config.local_epochs),
            'batch_size': int_box('batch size', 1, 10_000, config.batch_size),
            'shuffle_buffer': int_box('shuffle buffer', 0, 1_000_000, config.shuffle_buffer),
            'rounds': int_slider('rounds per Run', 1, 100, config.rounds),
            'seed': int_box('seed', 0, 2**31 - 1, config.seed),
            'random_clients': w.Checkbox(value=config.random_clients, description='random clients each round',
                                         indent=False, layout=_LAYOUT),
            'model': w.Dropdown(options=list(MODELS), value=config.model, description='model', style=_STYLE,
                                layout=_LAYOUT),
            'evaluate_every': int_slider('evaluate every (rounds)', 1, 20, config.evaluate_every),
            'eval_clients': int_box('test clients evaluated', 1, 100_000, config.eval_clients),
        }
        missing = set(ExperimentConfig.__dataclass_fields__) - set(self.widgets)
        assert not missing, f'no widget for {missing}'
        names = list(self.widgets)
        half = (len(names) + 1) // 2
        self.widget = w.HBox([w.VBox([self.widgets[n] for n in names[:half]]),
                              w.VBox([self.widgets[n] for n in names[half:]])])

    @property
    def config(self) -> ExperimentConfig:
        """The ExperimentConfig of the current widget values (raises ValueError if one is invalid)."""
        values = {name: widget.value for name, widget in self.widgets.items()}
        for name in ('client_learning_rate', 'server_learning_rate'):
            values[name] = float(f'{values[name]:.6g}')  # the log slider's float noise, e.g. 0.020000000000000004
        return ExperimentConfig(**values)

    @config.setter
    def config(self, config: ExperimentConfig) -> None:
        for name, widget in self.widgets.items():
            value = getattr(config, name)
            if isinstance(widget, w.FloatLogSlider):
                exponent = math.log10(value)
                widget.min, widget.max = min(widget.min, math.floor(exponent)), max(widget.max, math.ceil(exponent))
            elif hasattr(widget, 'max') and value > widget.max:
                widget.max = value
            widget.value = value

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)
