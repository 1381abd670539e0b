"""The hyperparameter panel: an input per ExperimentConfig field, the basic ones first."""
from __future__ import annotations

import html
import math

import ipywidgets as w

from fedteach.experiment import ALGORITHMS, ATTACKS, MODELS, ROBUST_AGGREGATORS, ExperimentConfig
from fedteach.optimizers import SERVER_OPTIMIZERS
from fedteach.widgets._display import widget_bundle
from fedteach.widgets.controller import FIELD_LABELS, format_value

__all__ = ['BASIC_FIELDS', 'CONTROLS', 'HyperparameterPanel', 'LogFloatInput']

BASIC_FIELDS = ('clients_per_round', 'client_learning_rate', 'local_epochs', 'batch_size', 'rounds', 'seed',
                'random_clients')
"""What notebook 3 has taught: the fields ``controls='basic'`` shows."""

CONTROLS = ('basic', 'all')
"""The panel's choices of controls."""

TOOLTIPS = {
    'clients_per_round': 'Clients that train in each round',
    'client_learning_rate': "Learning rate of the clients' local SGD: drag (log scale) or type an exact value",
    'server_learning_rate': 'Learning rate applied to the average update on the server (1 = plain FedAvg)',
    'local_epochs': 'Passes each client makes over its data in a round',
    'batch_size': 'Examples per local SGD step',
    'shuffle_buffer': "Shuffle buffer of the clients' datasets (0: no shuffling)",
    'rounds': 'Rounds one press of Run trains',
    'seed': 'Fixes the initial weights, the shuffling and the client sampling',
    'random_clients': 'Sample new clients every round (off: always the first ones, as the tutorial)',
    'model': 'linear: the tutorial\'s softmax regression; cnn: a small convolutional network',
    'evaluate_every': 'Evaluate on the test clients every this many rounds',
    'eval_clients': 'How many test clients the evaluation uses',
    'algorithm': 'fedavg, fedprox (with mu) or fedsgd',
    'proximal_mu': "FedProx: weight of the term that keeps clients near the server's model",
    'server_optimizer': 'How the server applies the average update (sgd = FedAvg; adam, yogi: Reddi et al.)',
    'dp_noise_multiplier': 'Differential privacy: Gaussian noise, in units of the clipping norm',
    'dp_clip_norm': 'Clip each client update to this L2 norm',
    'dp_delta': 'The delta of the reported (epsilon, delta)',
    'quantize_bits': 'Quantize client updates to this many bits',
    'attack': 'Malicious clients: flipped (x-4), boosted (x10) or random updates; flipped labels; a backdoor',
    'malicious_fraction': 'The share of clients that are malicious',
    'robust_aggregator': 'Instead of the mean: median, trimmed mean, Krum, Multi-Krum, or norm bounding',
}
"""What each input's tooltip explains (every widget gets a tooltip: an unset one shows "null")."""

_STYLE = {'description_width': '10em'}
_WIDTH = '26em'


class LogFloatInput:
    """A positive number as a log-scale slider and a box that holds the exact value.

    Dragging the slider sets the box to the slider's value rounded to two
    significant digits (0.02, 0.025, 0.032, ..., 0.05); a typed value is kept
    exactly and moves the slider (its range grows to include it).

    Args:
        value: the initial value (> 0).
        description: the label.
        low, high: the slider's range as powers of ten.
        tooltip: the hover text.

    Attributes:
        slider: the ``FloatLogSlider`` (no readout).
        box: the ``FloatText`` holding the value.
        widget: both, side by side.

    Example:
        >>> rate = LogFloatInput(0.02, 'learning rate', -4, 1, tooltip='step size')
        >>> rate.slider.value = 10 ** -1.3  # a drag to 0.0501...
        >>> rate.value
        0.05
        >>> rate.value = 0.0123  # typed: kept exactly
        >>> rate.value, round(rate.slider.value, 4)
        (0.0123, 0.0123)
    """

    def __init__(self, value: float, description: str, low: int, high: int, tooltip: str):
        self._syncing = False
        self.slider = w.FloatLogSlider(value=value, base=10, min=low, max=high, step=0.1, readout=False,
                                       description=description, tooltip=tooltip, style=_STYLE,
                                       layout=w.Layout(width=f'calc({_WIDTH} - 5.5em)'))
        self.box = w.FloatText(value=value, tooltip=tooltip, layout=w.Layout(width='5.5em'))
        self._fit(value)
        self.slider.observe(self._slid, names='value')
        self.box.observe(self._typed, names='value')
        self.widget = w.HBox([self.slider, self.box], layout=w.Layout(width=_WIDTH))
        self.widget.add_class('fedteach-log-input')

    @property
    def value(self) -> float:
        """The exact value (the box's)."""
        return self.box.value

    @value.setter
    def value(self, value: float) -> None:
        self.box.value = value

    def _fit(self, value):
        if value > 0 and math.isfinite(value):
            exponent = math.log10(value)
            self.slider.min = min(self.slider.min, math.floor(exponent))
            self.slider.max = max(self.slider.max, math.ceil(exponent))
            self.slider.value = value

    def _slid(self, change):
        if not self._syncing:
            self._syncing = True
            try:
                self.box.value = float(f'{change["new"]:.2g}')
            finally:
                self._syncing = False

    def _typed(self, change):
        if not self._syncing:
            self._syncing = True
            try:
                self._fit(change['new'])  # a value <= 0 stays in the box; the config says why it is wrong
            finally:
                self._syncing = False


class HyperparameterPanel:
    """Inputs for the :class:`~fedteach.experiment.ExperimentConfig` fields a notebook has taught.

    ``controls='basic'`` (the default) shows what notebook 3 teaches: clients
    per round, client learning rate, local epochs, batch size, rounds per Run,
    seed and random vs fixed clients; every other field keeps the value of
    ``config``. ``controls='all'`` adds, folded under "more settings", the
    model, the server's learning rate and optimizer, FedProx, differential
    privacy, clipping, quantization and the evaluation settings (notebook 7).

    ``widgets`` maps each shown field to its input (``panel.widgets['clients_per_round'].value = 4``;
    the learning rates are :class:`LogFloatInput`\\ s, with a ``value`` too);
    ``config`` builds the ExperimentConfig from them (and sets them).

    Args:
        config: the initial settings.
        max_clients: the largest choice of clients per round (e.g. the number of clients).
        controls: ``'basic'`` or ``'all'``.

    Example:
        >>> panel = HyperparameterPanel(ExperimentConfig(rounds=5, server_learning_rate=0.5))
        >>> panel.widgets['clients_per_round'].value = 4
        >>> panel.widgets['client_learning_rate'].value = 0.1
        >>> panel.config.clients_per_round, panel.config.client_learning_rate, panel.config.rounds
        (4, 0.1, 5)
        >>> 'server_learning_rate' in panel.widgets, panel.config.server_learning_rate
        (False, 0.5)
        >>> 'server_learning_rate' in HyperparameterPanel(controls='all').widgets
        True
    """

    def __init__(self, config: ExperimentConfig | None = None, max_clients: int = 50, controls: str = 'basic'):
        if controls not in CONTROLS:
            raise ValueError(f"controls must be 'basic' (what notebook 3 teaches) or 'all', got {controls!r}.")
        config = ExperimentConfig() if config is None else config
        self.controls, self._base = controls, config
        max_clients = max(int(max_clients), config.clients_per_round)

        def common(name):
            return dict(description=FIELD_LABELS[name], tooltip=TOOLTIPS[name], style=_STYLE,
                        layout=w.Layout(width=_WIDTH))

        def int_slider(name, low, high):
            value = getattr(config, name)
            return w.IntSlider(value=value, min=low, max=max(high, value), **common(name))

        def int_box(name, low, high):
            value = getattr(config, name)
            return w.BoundedIntText(value=value, min=low, max=max(high, value), **common(name))

        def choice(name, options):
            value = getattr(config, name)
            options = [('off', None) if o is None else (f'{o:g}', o) for o in options]
            if value not in [v for _, v in options]:
                options.append((f'{value:g}', value))
            return w.Dropdown(options=options, value=value, **common(name))

        def dropdown(name, options):
            return w.Dropdown(options=list(options), value=getattr(config, name), **common(name))

        def float_box(name, low, high, step):
            return w.BoundedFloatText(value=getattr(config, name), min=low, max=high, step=step, **common(name))

        def log_input(name, low, high):
            return LogFloatInput(getattr(config, name), FIELD_LABELS[name], low, high, TOOLTIPS[name])

        self.widgets = {
            'clients_per_round': int_slider('clients_per_round', 1, max_clients),
            'client_learning_rate': log_input('client_learning_rate', -4, 1),
            'local_epochs': int_slider('local_epochs', 1, 20),
            'batch_size': int_box('batch_size', 1, 10_000),
            'rounds': int_slider('rounds', 1, 100),
            'seed': int_box('seed', 0, 2**31 - 1),
            'random_clients': w.Checkbox(value=config.random_clients, description=FIELD_LABELS['random_clients'],
                                         tooltip=TOOLTIPS['random_clients'], indent=False,
                                         layout=w.Layout(width=_WIDTH)),
        }
        children = [self._view(name) for name in BASIC_FIELDS]
        if controls == 'all':
            more = {
                'model': dropdown('model', MODELS),
                'server_learning_rate': log_input('server_learning_rate', -2, 1),
                'server_optimizer': dropdown('server_optimizer', sorted(SERVER_OPTIMIZERS)),
                'algorithm': dropdown('algorithm', ALGORITHMS),
                'proximal_mu': float_box('proximal_mu', 0, 1e6, 0.01),
                'dp_noise_multiplier': choice('dp_noise_multiplier', (None, 0.1, 0.3, 0.5, 1.0, 2.0)),
                'dp_clip_norm': choice('dp_clip_norm', (None, 0.1, 0.5, 1.0, 5.0)),
                'dp_delta': float_box('dp_delta', 1e-12, 1.0, 1e-5),
                'quantize_bits': choice('quantize_bits', (None, 1, 2, 4, 8, 16)),
                'attack': dropdown('attack', [('none', None)] + [(a, a) for a in ATTACKS]),
                'malicious_fraction': w.FloatSlider(value=config.malicious_fraction, min=0.0, max=1.0, step=0.05,
                                                    readout_format='.2f', **common('malicious_fraction')),
                'robust_aggregator': dropdown('robust_aggregator',
                                              [('weighted mean', None)] + [(a, a) for a in ROBUST_AGGREGATORS]),
                'shuffle_buffer': int_box('shuffle_buffer', 0, 1_000_000),
                'evaluate_every': int_slider('evaluate_every', 1, 20),
                'eval_clients': int_box('eval_clients', 1, 100_000),
            }
            missing = set(ExperimentConfig.__dataclass_fields__) - set(self.widgets) - set(more)
            if missing:  # a new config field needs its input here
                raise RuntimeError(f'HyperparameterPanel has no input for {sorted(missing)}')
            self.widgets.update(more)
            folded = w.Accordion(children=[w.VBox([self._view(name) for name in more])], selected_index=None,
                                 titles=('more settings: model, server, FedProx, privacy, compression, '
                                         'attacks, evaluation',))
            children.append(folded)
        self.widget = w.VBox(children)

    def on_change(self, callback) -> None:
        """Calls ``callback()`` whenever a shown input changes (e.g. to compile the new settings ahead of Run).

        Example:
            >>> panel = HyperparameterPanel()
            >>> seen = []
            >>> panel.on_change(lambda: seen.append(panel.config.clients_per_round))
            >>> panel.widgets['clients_per_round'].value = 5
            >>> seen
            [5]
        """
        for widget in self.widgets.values():
            (widget.box if isinstance(widget, LogFloatInput) else widget).observe(lambda _: callback(), names='value')

    def _view(self, name):
        widget = self.widgets[name]
        return widget.widget if isinstance(widget, LogFloatInput) else widget

    @property
    def config(self) -> ExperimentConfig:
        """The ExperimentConfig of the shown inputs' values and ``config``'s other fields.

        Raises:
            ValueError: a value is out of range (the message names the field).
        """
        return self._base.replace(**{name: widget.value for name, widget in self.widgets.items()})

    @config.setter
    def config(self, config: ExperimentConfig) -> None:
        self._base = config
        for name, widget in self.widgets.items():
            value = getattr(config, name)
            if isinstance(widget, w.Dropdown) and isinstance(widget.options[0], tuple) and \
                    value not in [v for _, v in widget.options]:
                widget.options = list(widget.options) + [(f'{value:g}', value)]
            elif hasattr(widget, 'max') and value is not None and value > widget.max:
                widget.max = value
            widget.value = value

    def _repr_mimebundle_(self, **kwargs):
        rows = ''.join(f'<tr><td>{FIELD_LABELS[name]}</td><td>{html.escape(format_value(widget.value))}</td></tr>'
                       for name, widget in self.widgets.items())
        return widget_bundle(self.widget, f'Hyperparameter panel: {self._base.describe()}',
                             f'<table>{rows}</table>', **kwargs)
