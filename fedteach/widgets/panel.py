"""The hyperparameter panel: one input per ExperimentConfig field."""
from __future__ import annotations

import math

import ipywidgets as w

from fedteach.experiment import ALGORITHMS, MODELS, ExperimentConfig
from fedteach.optimizers import SERVER_OPTIMIZERS

__all__ = ['HyperparameterPanel']

_STYLE = {'description_width': '13em'}
_LAYOUT = w.Layout(width='29em')


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
                                    readout_format='.2g', description=description, style=_STYLE, layout=_LAYOUT)

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
        basic = list(self.widgets)

        def choice(description, options, value):
            options = [('off', None) if o is None else (f'{o:g}', o) for o in options]
            if value not in [v for _, v in options]:
                options.append((f'{value:g}', value))
            return w.Dropdown(options=options, value=value, description=description, style=_STYLE, layout=_LAYOUT)

        self.widgets.update({
            'algorithm': w.Dropdown(options=list(ALGORITHMS), value=config.algorithm, description='algorithm',
                                    style=_STYLE, layout=_LAYOUT),
            'proximal_mu': w.BoundedFloatText(value=config.proximal_mu, min=0, max=1e6, step=0.01,
                                              description='FedProx mu', style=_STYLE, layout=_LAYOUT),
            'server_optimizer': w.Dropdown(options=sorted(SERVER_OPTIMIZERS), value=config.server_optimizer,
                                           description='server optimizer', style=_STYLE, layout=_LAYOUT),
            'dp_noise_multiplier': choice('DP noise multiplier', (None, 0.1, 0.3, 0.5, 1.0, 2.0),
                                          config.dp_noise_multiplier),
            'dp_clip_norm': choice('clip updates to norm', (None, 0.1, 0.5, 1.0, 5.0), config.dp_clip_norm),
            'dp_delta': w.BoundedFloatText(value=config.dp_delta, min=1e-12, max=1.0, step=1e-5,
                                           description='DP delta', style=_STYLE, layout=_LAYOUT),
            'quantize_bits': choice('quantize updates (bits)', (None, 1, 2, 4, 8, 16), config.quantize_bits),
        })
        advanced = [n for n in self.widgets if n not in basic]
        missing = set(ExperimentConfig.__dataclass_fields__) - set(self.widgets)
        if missing:  # a new config field needs its widget here
            raise RuntimeError(f'HyperparameterPanel has no widget for {sorted(missing)}')
        half = (len(basic) + 1) // 2
        more = w.Accordion(children=[w.VBox([self.widgets[n] for n in advanced])], selected_index=None)
        more.set_title(0, 'algorithm, privacy, compression (notebook 7)')
        self.widget = w.VBox([w.HBox([w.VBox([self.widgets[n] for n in basic[:half]]),
                                      w.VBox([self.widgets[n] for n in basic[half:]])]), more])

    @property
    def config(self) -> ExperimentConfig:
        """The ExperimentConfig of the current widget values (raises ValueError if one is invalid)."""
        values = {name: widget.value for name, widget in self.widgets.items()}
        for name in ('client_learning_rate', 'server_learning_rate'):
            # Two significant digits, as the readout shows: a typed 0.05 lands on 10**-1.3 = 0.0501187.
            values[name] = float(f'{values[name]:.2g}')
        return ExperimentConfig(**values)

    @config.setter
    def config(self, config: ExperimentConfig) -> None:
        for name, widget in self.widgets.items():
            value = getattr(config, name)
            if isinstance(widget, w.Dropdown) and isinstance(widget.options[0], tuple) and \
                    value not in [v for _, v in widget.options]:
                widget.options = list(widget.options) + [(f'{value:g}', value)]
            if isinstance(widget, w.FloatLogSlider):
                exponent = math.log10(value)
                widget.min, widget.max = min(widget.min, math.floor(exponent)), max(widget.max, math.ceil(exponent))
            elif hasattr(widget, 'max') and value is not None and value > widget.max:
                widget.max = value
            widget.value = value

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)
