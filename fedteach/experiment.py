"""The headless experiment engine behind the training dashboard and the ``fedteach`` command.

An :class:`ExperimentConfig` holds the tutorial's knobs (clients per round,
learning rates, local epochs, ...); an :class:`Experiment` turns it into a
Keras model, a Federated Averaging process and a federated evaluation, and
runs rounds, keeping a ``history`` of plain dicts (one per completed round)
that :func:`fedteach.plots.plot_convergence` draws.

Evaluation: after a round, the new model is evaluated (federated evaluation,
no training) on the TEST data of a fixed set of test clients: the first ones
of ``test.client_ids``, at least ``config.eval_clients`` of them and as many
more as it takes to hold ``min_eval_examples`` test examples (1,000 by
default, so that accuracy moves in steps of 0.1% rather than 1-2%). With
fixed training clients, the training clients are left out of the evaluation
unless ``eval_training_clients=True``. The set never changes during a run, so
the evaluation curve measures the model and not which clients happened to be
picked, and it is comparable across runs. ``Experiment.evaluation_description``
says in one sentence what the evaluation measures; every history entry
carries it as ``'evaluated_on'``, for plot captions.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Callable

import keras
import numpy as np

from fedteach.data import make_federated_data, preprocess_for_tutorial
from fedteach.evaluation import build_federated_evaluation
from fedteach.models import from_compiled_keras_model
from fedteach import aggregators, attacks
from fedteach import robust as robust_aggregators
from fedteach.optimizers import SERVER_OPTIMIZERS, server_optimizer_fn
from fedteach.rounds import (DivergenceError, ServerState, build_federated_averaging_process,
                             build_federated_sgd_process, sample_clients)
from fedteach.rounds.process import model_already_initialized

__all__ = ['ALGORITHMS', 'ATTACKS', 'ROBUST_AGGREGATORS', 'EXPLODING_LOSS_FACTOR', 'Experiment', 'ExperimentConfig', 'ExplodingLossWarning', 'MODELS', 'build_aggregator', 'build_keras_model']

MODELS = ('linear', 'cnn')
"""Model names an :class:`ExperimentConfig` accepts."""

ALGORITHMS = ('fedavg', 'fedprox', 'fedsgd')
"""Algorithm names an :class:`ExperimentConfig` accepts."""

ATTACKS = ('sign_flip', 'scale_update', 'random_update', 'label_flip', 'backdoor')
"""Attacks an :class:`ExperimentConfig` accepts (see :mod:`fedteach.attacks`): the first three corrupt the
malicious clients' updates in each round, the last two their data."""

ROBUST_AGGREGATORS = ('median', 'trimmed_mean', 'krum', 'multi_krum', 'norm_bound')
"""Robust aggregators an :class:`ExperimentConfig` accepts (see :mod:`fedteach.robust`)."""

SIGN_FLIP_SCALE, BOOST, BACKDOOR_TARGET, NORM_BOUND = 4.0, 10.0, 0, 0.3
"""The attacks' and norm bounding's settings in an Experiment: sign flipping sends -4 x the update (a plain flip
from 30% of the clients only slows FedAvg down), model replacement boosts it 10 x, the backdoor's trigger leads to
digit 0, and norm bounding clips to 0.3 unless ``dp_clip_norm`` says otherwise (tools/attack_table.py)."""

_SHARED_MODELS = {}  # (model name, input shape and dtypes) -> the wrapped Keras model that continued runs reuse
_EVALUATIONS = {}  # (test and train data, evaluation settings) -> (test, train, client ids, datasets, description)

EXPLODING_LOSS_FACTOR = 10.0
"""A run warns when its training loss exceeds this many times a uniform guess's (10 x ln 10 = 23)."""


class ExplodingLossWarning(RuntimeWarning):
    """The training loss exploded without becoming NaN (a logits-based loss can reach 1e10 with finite weights)."""


_POSITIVE_INTS = ('clients_per_round', 'local_epochs', 'batch_size', 'rounds', 'evaluate_every', 'eval_clients')


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """The settings of a federated training experiment (the hyperparameter panel's fields).

    Args:
        clients_per_round: clients that train in each round.
        client_learning_rate: SGD learning rate of the clients' local training.
        server_learning_rate: SGD learning rate applied to the average update
            on the server (1.0 adopts the clients' average, plain FedAvg).
        local_epochs: passes each client makes over its data in a round.
        batch_size: examples per local SGD step.
        shuffle_buffer: shuffle buffer of the client datasets (0: no shuffle).
        rounds: rounds one call of :meth:`Experiment.run` trains.
        seed: fixes the initial weights, the shuffling and the client sampling.
        random_clients: False takes the first ``clients_per_round`` clients
            every round, as the tutorial does; True samples clients uniformly
            per round with ``ft.sample_clients(ids, n, round, seed)``.
        model: ``'linear'`` (the tutorial's zero-initialised softmax
            regression) or ``'cnn'`` (conv 32 3x3, max-pool, dense 128, dense 10).
        evaluate_every: run the federated evaluation every this many rounds
            (and always after the last round of a :meth:`Experiment.run`).
        eval_clients: the fewest test clients evaluated (the first ones; more
            are taken until they hold the Experiment's ``min_eval_examples``).
        algorithm: ``'fedavg'``, ``'fedprox'`` (with ``proximal_mu``) or ``'fedsgd'``.
        proximal_mu: FedProx's proximal term (``algorithm='fedprox'``).
        server_optimizer: ``'sgd'`` (FedAvg), ``'momentum'``, ``'adagrad'``,
            ``'adam'`` or ``'yogi'`` (Reddi et al. 2020), at ``server_learning_rate``.
        dp_noise_multiplier: with a value, the differentially private mean
            (clip to ``dp_clip_norm``, Gaussian noise); epsilon is reported.
        dp_clip_norm: clip client updates to this L2 norm (alone: clipping only).
        dp_delta: the delta of the reported (epsilon, delta).
        quantize_bits: with a value, client updates are quantized to this many bits.
        attack: None, or one of :data:`ATTACKS`: ``malicious_fraction`` of
            each round's clients send flipped (x -4), boosted (x 10) or
            random updates, or that share of all writers has its labels
            flipped or a backdoor (a 4x4 ink square means digit 0; the history
            then has ``attack_success``).
        malicious_fraction: the share of clients that are malicious, in [0, 1].
        robust_aggregator: None (the weighted mean), or one of
            :data:`ROBUST_AGGREGATORS`: the coordinate-wise median, the mean
            trimmed by ``malicious_fraction`` on each side (at least 10%),
            Krum or Multi-Krum for that many malicious clients per round (at
            least 1), or the weighted mean of updates clipped to
            ``dp_clip_norm`` (default 0.3).

    Raises:
        ValueError: a setting out of range, e.g. a learning rate <= 0.

    Example:
        >>> config = ExperimentConfig(client_learning_rate=0.05)
        >>> config.replace(clients_per_round=5).clients_per_round
        5
        >>> config.describe()
        'lr=0.05, 3 clients'
        >>> ExperimentConfig(batch_size=0)
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be an integer >= 1, got 0.
    """

    clients_per_round: int = 3
    client_learning_rate: float = 0.02
    server_learning_rate: float = 1.0
    local_epochs: int = 10
    batch_size: int = 20
    shuffle_buffer: int = 500
    rounds: int = 10
    seed: int = 0
    random_clients: bool = False
    model: str = 'linear'
    evaluate_every: int = 1
    eval_clients: int = 10
    algorithm: str = 'fedavg'
    proximal_mu: float = 0.0
    server_optimizer: str = 'sgd'
    dp_noise_multiplier: float | None = None
    dp_clip_norm: float | None = None
    dp_delta: float = 1e-5
    quantize_bits: int | None = None
    attack: str | None = None
    malicious_fraction: float = 0.3
    robust_aggregator: str | None = None

    def __post_init__(self):
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f'{name} must be an integer >= 1, got {value!r}.')
        for name in ('shuffle_buffer', 'seed'):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f'{name} must be an integer >= 0, got {value!r}.')
        for name in ('client_learning_rate', 'server_learning_rate'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(value) or value <= 0:
                raise ValueError(f'{name} must be a finite number > 0 (e.g. 0.02), got {value!r}.')
        if not isinstance(self.random_clients, (bool, np.bool_)):
            raise ValueError(f'random_clients must be True or False, got {self.random_clients!r}.')
        if self.model not in MODELS:
            raise ValueError(f'model must be one of {MODELS}, got {self.model!r}.')
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f'algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}.')
        if self.server_optimizer not in SERVER_OPTIMIZERS:
            raise ValueError(f'server_optimizer must be one of {sorted(SERVER_OPTIMIZERS)}, '
                             f'got {self.server_optimizer!r}.')
        checks = [('proximal_mu', self.proximal_mu, 0.0, False), ('dp_noise_multiplier', self.dp_noise_multiplier,
                  0.0, True), ('dp_clip_norm', self.dp_clip_norm, 0.0, True), ('dp_delta', self.dp_delta, 0.0, False)]
        for name, value, low, optional in checks:
            if value is None and optional:
                continue
            if not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value) \
                    or value < low or (name in ('dp_clip_norm', 'dp_delta') and value == 0):
                raise ValueError(f'{name} must be a finite number {">" if name in ("dp_clip_norm", "dp_delta") else ">="} '
                                 f'{low:g}, got {value!r}.')
        if self.attack is not None and self.attack not in ATTACKS:
            raise ValueError(f'attack must be None or one of {ATTACKS}, got {self.attack!r}.')
        if self.robust_aggregator is not None and self.robust_aggregator not in ROBUST_AGGREGATORS:
            raise ValueError(f'robust_aggregator must be None or one of {ROBUST_AGGREGATORS}, '
                             f'got {self.robust_aggregator!r}.')
        if self.robust_aggregator is not None and self.dp_noise_multiplier is not None:
            raise ValueError(f'robust_aggregator={self.robust_aggregator!r} and dp_noise_multiplier both replace the '
                             'mean of the updates; choose one (dp_clip_norm alone combines with either).')
        fraction = self.malicious_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating, np.integer)) \
                or not 0 <= fraction <= 1:
            raise ValueError(f'malicious_fraction must be a number from 0 to 1 (e.g. 0.3), got {fraction!r}.')
        if self.robust_aggregator in ('krum', 'multi_krum') and self.clients_per_round <= 2 * self.krum_f + 2:
            raise ValueError(f'robust_aggregator={self.robust_aggregator!r} allows for f={self.krum_f} malicious '
                             f'clients per round and needs more than 2f + 2 = {2 * self.krum_f + 2} clients per '
                             f'round; got clients_per_round={self.clients_per_round}: choose at least '
                             f'{2 * self.krum_f + 3}.')
        if self.quantize_bits is not None and (not _is_int(self.quantize_bits) or not 1 <= self.quantize_bits <= 16):
            raise ValueError(f'quantize_bits must be an integer from 1 to 16, got {self.quantize_bits!r}.')

    @property
    def krum_f(self) -> int:
        """The malicious clients per round that Krum and Multi-Krum allow for: ``malicious_fraction`` of the
        round's clients, at least 1.

        Example:
            >>> ExperimentConfig(clients_per_round=10, malicious_fraction=0.3).krum_f
            3
        """
        return max(1, round(self.malicious_fraction * self.clients_per_round))

    def replace(self, **changes) -> 'ExperimentConfig':
        """A copy with some fields changed (validated again).

        Example:
            >>> ExperimentConfig().replace(rounds=3).rounds
            3
        """
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """A short label of the settings students change most, for run names and legends.

        Lists the client learning rate and clients per round, then whatever
        else differs from the defaults.

        Example:
            >>> ExperimentConfig(local_epochs=1, random_clients=True).describe()
            'lr=0.02, 3 clients, 1 epoch, random clients'
        """
        parts = [f'lr={self.client_learning_rate:g}',
                 f'{self.clients_per_round} client' + ('s' if self.clients_per_round != 1 else '')]
        default = ExperimentConfig()
        if self.server_learning_rate != default.server_learning_rate:
            parts.append(f'server lr={self.server_learning_rate:g}')
        if self.local_epochs != default.local_epochs:
            parts.append(f'{self.local_epochs} epoch' + ('s' if self.local_epochs != 1 else ''))
        if self.batch_size != default.batch_size:
            parts.append(f'batch {self.batch_size}')
        if self.random_clients:
            parts.append('random clients')
        if self.model != default.model:
            parts.append(self.model)
        if self.seed != default.seed:
            parts.append(f'seed {self.seed}')
        if self.algorithm != default.algorithm:
            parts.append(self.algorithm + (f' mu={self.proximal_mu:g}' if self.algorithm == 'fedprox' else ''))
        if self.server_optimizer != default.server_optimizer:
            parts.append(f'server {self.server_optimizer}')
        if self.dp_noise_multiplier is not None:
            parts.append(f'DP z={self.dp_noise_multiplier:g}')
        if self.quantize_bits is not None:
            parts.append(f'{self.quantize_bits} bits')
        if self.attack is not None:
            parts.append(f'{self.attack} {self.malicious_fraction:.0%}')
        if self.robust_aggregator is not None:
            parts.append(self.robust_aggregator)
        return ', '.join(parts)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def build_keras_model(model: str = 'linear', learning_rate: float = 0.02) -> keras.Model:
    """The compiled Keras model of an experiment, taking the tutorial's flat ``x: float32[784]``.

    ``'linear'``: one softmax layer with zero-initialised weights, like the
    tutorial. ``'cnn'``: reshape to 28x28x1, conv 32 3x3 relu, 2x2 max-pool,
    flatten, dense 128 relu, dense 10 softmax. Compiled with sparse
    categorical cross-entropy, SGD and ``SparseCategoricalAccuracy``.

    Example:
        >>> build_keras_model('linear').output_shape
        (None, 10)
        >>> build_keras_model('cnn').count_params()
        693962
    """
    if model == 'linear':
        layers = [keras.layers.Dense(10, activation='softmax', kernel_initializer='zeros')]
    elif model == 'cnn':
        layers = [keras.layers.Reshape((28, 28, 1)),
                  keras.layers.Conv2D(32, 3, activation='relu'),
                  keras.layers.MaxPooling2D(2),
                  keras.layers.Flatten(),
                  keras.layers.Dense(128, activation='relu'),
                  keras.layers.Dense(10, activation='softmax')]
    else:
        raise ValueError(f'model must be one of {MODELS}, got {model!r}.')
    net = keras.Sequential([keras.Input((784,))] + layers)
    net.compile(loss=keras.losses.SparseCategoricalCrossentropy(),
                optimizer=keras.optimizers.SGD(learning_rate),
                metrics=[keras.metrics.SparseCategoricalAccuracy()])
    return net


class Experiment:
    """Federated Averaging on a federated dataset, round by round, with a history.

    Each history entry is a plain dict: ``{'run', 'round', 'train_loss',
    'train_accuracy', 'eval_loss', 'eval_accuracy', 'evaluated_on',
    'num_examples', 'seconds', 'clients'}``. The train metrics are the
    clients' averages during local training (the tutorial's metrics, which
    lag behind and flatter the model); the eval metrics come from the
    federated evaluation of the model after the round on the test data of
    the evaluation clients (see the module docs; None in rounds without
    evaluation, see ``config.evaluate_every``), and ``'evaluated_on'`` is
    :attr:`evaluation_description`. The aggregator's measurements (e.g.
    ``epsilon``, ``malicious_clients``) are added under their names, and
    with ``attack='backdoor'`` the ``'attack_success'``: the share of the
    evaluation clients' non-target digits, triggered, that the model calls
    the target.

    A new Experiment of a model architecture already trained in this
    session reuses its compiled round and evaluation: changing a learning
    rate, mu, the seed or the server optimizer costs a round, not a compilation.

    Args:
        train: the training ``ClientData`` (tutorial element structure).
        test: the test ``ClientData``.
        config: an :class:`ExperimentConfig` (default settings if None).
        name: the run's name in the history and plot legends
            (default ``'run (<config.describe()>)'``).
        initial_state: continue from this ``ServerState`` (of an experiment
            with the same model) instead of fresh weights; rounds keep
            counting. If it comes from another server optimizer, the model is
            continued and the server optimizer's state (momentum, moments)
            starts afresh, its step counter at the rounds already trained.
        min_eval_examples: the fewest test examples the evaluation uses
            (test clients are added until they hold that many, or all are used).
        eval_training_clients: with fixed training clients, also evaluate on
            the training clients' test data (default: left out).

    Example:
        >>> import fedteach as ft
        >>> train, test = ft.load_offline_digits(num_clients=5)
        >>> experiment = Experiment(train, test, ExperimentConfig(local_epochs=1, rounds=2))
        >>> history = experiment.run()
        >>> [entry['round'] for entry in history], experiment.round_num
        ([1, 2], 2)
        >>> sorted(history[-1])  # doctest: +NORMALIZE_WHITESPACE
        ['clients', 'eval_accuracy', 'eval_loss', 'evaluated_on', 'num_examples', 'round', 'run', 'seconds',
         'train_accuracy', 'train_loss']
        >>> experiment.evaluation_description
        'held-out test examples of 2 clients (14 examples), none of them training clients'
    """

    def __init__(self, train, test, config: ExperimentConfig | None = None, name: str | None = None,
                 *, initial_state: ServerState | None = None, min_eval_examples: int = 1000,
                 eval_training_clients: bool = False):
        config = ExperimentConfig() if config is None else config
        if not isinstance(config, ExperimentConfig):
            raise TypeError(f'config must be an ExperimentConfig, got {type(config).__name__}.')
        if config.clients_per_round > len(train.client_ids):
            raise ValueError(f'clients_per_round={config.clients_per_round} but the training data has only '
                             f'{len(train.client_ids)} clients; choose at most {len(train.client_ids)}.')
        if config.attack == 'label_flip':
            train = attacks.flip_labels(train, config.malicious_fraction, seed=config.seed)
        elif config.attack == 'backdoor':
            train = attacks.backdoor(train, config.malicious_fraction, target=BACKDOOR_TARGET, seed=config.seed)
        self.train, self.test, self.config = train, test, config
        self.name = name if name is not None else f'run ({config.describe()})'
        self.preprocess = preprocess_for_tutorial(num_epochs=config.local_epochs, batch_size=config.batch_size,
                                                  shuffle_buffer=config.shuffle_buffer, seed=config.seed)
        eval_preprocess = preprocess_for_tutorial(num_epochs=1, batch_size=max(config.batch_size, 100),
                                                  shuffle_buffer=0)
        # One batch of the tutorial preprocess's structure (x: the flattened pixels, y: the label as [1]),
        # made from the raw arrays: building a tf.data pipeline to read it would cost more than the round.
        raw = train.client_arrays(train.client_ids[0])
        sample_batch = {'x': np.reshape(raw['pixels'][:1], (1, -1)), 'y': np.reshape(raw['label'][:1], (1, 1))}
        models = []
        shared_key = (config.model, sample_batch['x'].shape[1:], sample_batch['x'].dtype.str,
                      sample_batch['y'].dtype.str)

        def model_fn():
            # The process builds the model (seeded: a fresh run starts from fresh weights); the evaluation gets
            # the same one. A run that continues from a state needs no fresh weights: it reuses the model of its
            # kind built by an earlier Experiment (its variables are only a workspace that every round loads).
            if not models:
                if initial_state is not None and shared_key in _SHARED_MODELS:
                    models.append(_SHARED_MODELS[shared_key])
                else:
                    models.append(from_compiled_keras_model(
                        build_keras_model(config.model, config.client_learning_rate), sample_batch))
                    _SHARED_MODELS.setdefault(shared_key, models[0])
            return models[0]

        self.aggregator = build_aggregator(config, total_clients=len(train.client_ids))
        # A shared model's weights are the state's: nothing to seed, and reseeding TensorFlow would make every
        # compiled function instantiate again at its next call (see model_already_initialized).
        with model_already_initialized(initial_state is not None and shared_key in _SHARED_MODELS):
            self.process = _build_process(config, model_fn, self.aggregator)
        self.evaluation = build_federated_evaluation(model_fn)
        if not _is_int(min_eval_examples) or min_eval_examples < 0:
            raise ValueError(f'min_eval_examples must be an integer >= 0 (e.g. 1000), got {min_eval_examples!r}.')
        training = set(train.client_ids) if config.random_clients else set(self.clients_for_round(1))
        exclude = () if eval_training_clients or config.random_clients else training
        key = (id(test), id(train), config.eval_clients, min_eval_examples, eval_training_clients,
               config.random_clients, tuple(sorted(training)), eval_preprocess.batch_size)
        cached = _EVALUATIONS.get(key)
        if cached is None or cached[0] is not test or cached[1] is not train:
            ids = _evaluation_clients(test, config.eval_clients, min_eval_examples, exclude)
            cached = _EVALUATIONS[key] = (test, train, ids, make_federated_data(test, ids, eval_preprocess),
                                          _describe_evaluation(test, ids, training, config.random_clients))
        # The same evaluation as an earlier Experiment's reuses its datasets (and so their stacked examples).
        self.eval_client_ids, self.eval_data, self.evaluation_description = list(cached[2]), list(cached[3]), cached[4]
        self.backdoor_data = None  # the evaluation clients' non-target examples, triggered, labelled the target
        if config.attack == 'backdoor':
            triggered = attacks.backdoor_test_data(test, BACKDOOR_TARGET)
            ids = [c for c in self.eval_client_ids if c in set(triggered.client_ids)]
            self.backdoor_data = make_federated_data(triggered, ids, eval_preprocess)
        if initial_state is not None:
            initial_state = _continued(initial_state, self.process.initialize())
        self.initial_state = initial_state
        self.reset()

    def reset(self) -> None:
        """Back to the initial weights (or ``initial_state``) with an empty history."""
        self.state = self.initial_state if self.initial_state is not None else self.process.initialize()
        self.history: list[dict] = []

    @property
    def round_num(self) -> int:
        """Number of rounds the current state has been through (counts those of ``initial_state``)."""
        return self.state.round_num

    def clients_for_round(self, round_num: int) -> list:
        """The training clients of round ``round_num`` (1-based): fixed first ones or a seeded sample.

        Example:
            >>> import fedteach as ft
            >>> train, test = ft.load_offline_digits(num_clients=5)
            >>> Experiment(train, test, ExperimentConfig(clients_per_round=2)).clients_for_round(7)
            ['writer_000', 'writer_001']
        """
        ids, n = self.train.client_ids, self.config.clients_per_round
        if self.config.random_clients:
            return sample_clients(ids, n, round_num=round_num, seed=self.config.seed)
        return list(ids[:n])

    def run_round(self, evaluate: bool | None = None) -> dict:
        """Trains one round and returns its history entry (appended once the round is complete).

        Args:
            evaluate: run the federated evaluation after the round; None
                follows ``config.evaluate_every``.

        Raises:
            DivergenceError: the round produced NaN/Inf; ``state`` and
                ``history`` stay at the last good round.
        """
        start = time.perf_counter()
        round_num = self.round_num + 1
        clients = self.clients_for_round(round_num)
        data = make_federated_data(self.train, clients, self.preprocess)
        state, metrics = self.process.next(self.state, data)  # DivergenceError leaves self.state as it was
        if evaluate is None:
            evaluate = round_num % self.config.evaluate_every == 0
        evaluation = self.evaluation(state.model, self.eval_data) if evaluate else None
        if evaluation is not None and not math.isfinite(float(evaluation['loss'])):
            raise DivergenceError(
                f'round {round_num} diverged: the evaluation loss is {float(evaluation["loss"])}. Try a smaller '
                f'client or server learning rate; the state after round {round_num - 1} is kept.')
        entry = {
            'run': self.name,
            'round': round_num,
            'train_loss': float(metrics['loss']),
            'train_accuracy': _accuracy(metrics),
            'eval_loss': float(evaluation['loss']) if evaluation is not None else None,
            'eval_accuracy': _accuracy(evaluation) if evaluation is not None else None,
            'evaluated_on': self.evaluation_description,
            'num_examples': int(metrics['num_examples']),
            'seconds': time.perf_counter() - start,
            'clients': list(clients),
        }
        for name in (self.aggregator.measurement_names if self.aggregator else ()):
            entry[name] = float(metrics[name])
        if self.backdoor_data is not None:  # the share of triggered digits the model calls the target
            entry['attack_success'] = _accuracy(self.evaluation(state.model, self.backdoor_data)) if evaluate else None
        warning = self._exploding(entry)
        if warning:
            entry['warning'] = warning
            warnings.warn(warning, ExplodingLossWarning, stacklevel=2)
        self.state = state
        self.history.append(entry)
        return entry

    def _exploding(self, entry: dict) -> str | None:
        """A warning, the first time in this run the training loss exceeds EXPLODING_LOSS_FACTOR x chance's."""
        chance = math.log(10)  # the loss of a model that gives each of the 10 digits the same probability
        loss = entry['train_loss']
        if any('warning' in e for e in self.history) or not loss > EXPLODING_LOSS_FACTOR * chance:
            return None
        return (f"round {entry['round']}: the training loss ({loss:.4g}) is more than {EXPLODING_LOSS_FACTOR:g} "
                f"times that of a uniform guess ({chance:.2f}): training is diverging. The likely cause is a "
                f"learning rate too large for this data (client {self.config.client_learning_rate:g}, server "
                f"{self.config.server_learning_rate:g}); try a smaller one.")

    def run(self, rounds: int | None = None, callback: Callable[[dict], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> list[dict]:
        """Trains ``rounds`` more rounds (default ``config.rounds``) and returns the whole history.

        Args:
            rounds: how many rounds to add.
            callback: called with each round's history entry.
            should_stop: checked before every round; True stops early (the
                rounds already done are kept).

        Raises:
            DivergenceError: as :meth:`run_round`; earlier rounds are kept.
        """
        rounds = self.config.rounds if rounds is None else rounds
        if not _is_int(rounds) or rounds < 0:
            raise ValueError(f'rounds must be an integer >= 0, got {rounds!r}.')
        for i in range(rounds):
            if should_stop is not None and should_stop():
                break
            entry = self.run_round(evaluate=True if i == rounds - 1 else None)
            if callback is not None:
                callback(entry)
        return self.history


def build_aggregator(config: ExperimentConfig, total_clients: int):
    """The aggregator a config asks for: None (weighted mean), or a chain of an update attack, quantization,
    clipping and one reduction (the DP mean, a robust aggregator, or the weighted mean).

    Example:
        >>> build_aggregator(ExperimentConfig(dp_noise_multiplier=1.0, quantize_bits=8), 100).name
        'quantize(8 bits) -> dp_mean(z=1, clip=1)'
        >>> build_aggregator(ExperimentConfig(attack='sign_flip', robust_aggregator='median'), 100).name
        'sign_flip(0.3, scale=4) -> median'
        >>> build_aggregator(ExperimentConfig(), 100) is None
        True
    """
    stages = []
    fraction = config.malicious_fraction
    if config.attack == 'sign_flip':
        stages.append(attacks.sign_flip(fraction, SIGN_FLIP_SCALE))
    elif config.attack == 'scale_update':
        stages.append(attacks.scale_update(fraction, BOOST))
    elif config.attack == 'random_update':
        stages.append(attacks.random_update(fraction))
    if config.quantize_bits is not None:
        stages.append(aggregators.quantize(config.quantize_bits))
    robust = config.robust_aggregator
    if config.dp_noise_multiplier is not None:
        # Privacy amplification by sampling only holds when clients are sampled at random.
        stages.append(aggregators.dp_mean(config.dp_noise_multiplier, config.dp_clip_norm or 1.0,
                                          delta=config.dp_delta,
                                          total_clients=total_clients if config.random_clients else None))
    elif config.dp_clip_norm is not None and robust != 'norm_bound':
        stages.append(aggregators.clip(config.dp_clip_norm))
    malicious = config.krum_f
    if robust == 'median':
        stages.append(robust_aggregators.median())
    elif robust == 'trimmed_mean':
        stages.append(robust_aggregators.trimmed_mean(min(max(fraction, 0.1), 0.45)))
    elif robust == 'krum':
        stages.append(robust_aggregators.krum(malicious))
    elif robust == 'multi_krum':
        stages.append(robust_aggregators.multi_krum(malicious, max(config.clients_per_round - malicious, 1)))
    elif robust == 'norm_bound':
        stages.append(robust_aggregators.norm_bound(config.dp_clip_norm or NORM_BOUND))
    return aggregators.chain(*stages) if stages else None


_OPTIMIZERS = {}  # ('server', name, rate) or ('client', id of a shared model, rate) -> a Keras optimizer


def _reused(key, make):
    """``make()``, or the optimizer it made for the same ``key`` before: a Keras optimizer's variables cost more
    to create than a round of the linear model. The server's is only read (its state travels in the
    ServerState), the clients' is reset for every client by the general engine."""
    if key not in _OPTIMIZERS:
        _OPTIMIZERS[key] = make()
    return _OPTIMIZERS[key]


def _build_process(config: ExperimentConfig, model_fn, aggregator):
    make_server = server_optimizer_fn(config.server_optimizer, config.server_learning_rate)
    server_fn = lambda: _reused(('server', config.server_optimizer, config.server_learning_rate), make_server)
    if config.algorithm == 'fedsgd':
        return build_federated_sgd_process(model_fn, server_optimizer_fn=server_fn, seed=config.seed,
                                           aggregator=aggregator)

    def client_fn():  # called after model_fn: the model is built; one optimizer per shared model and rate
        model, make = model_fn(), lambda: keras.optimizers.SGD(config.client_learning_rate)
        shared = any(model is m for m in _SHARED_MODELS.values())
        return _reused(('client', id(model), config.client_learning_rate), make) if shared else make()

    return build_federated_averaging_process(
        model_fn, client_optimizer_fn=client_fn, server_optimizer_fn=server_fn, seed=config.seed,
        proximal_mu=config.proximal_mu if config.algorithm == 'fedprox' else 0.0, aggregator=aggregator)


def _accuracy(metrics) -> float | None:
    key = next((k for k in metrics if 'accuracy' in k), None)
    return None if key is None else float(metrics[key])


def _evaluation_clients(test, fewest: int, min_examples: int, exclude=()) -> list:
    """The first test clients not in ``exclude``: at least ``fewest``, and until they hold ``min_examples``.

    Example:
        >>> import fedteach as ft
        >>> _, test = ft.load_offline_digits(num_clients=6)
        >>> _evaluation_clients(test, 2, 0, exclude={'writer_000'})
        ['writer_001', 'writer_002']
    """
    chosen, examples = [], 0
    for client_id in test.client_ids:
        if client_id in exclude:
            continue
        if len(chosen) >= fewest and examples >= min_examples:
            break
        chosen.append(client_id)
        examples += test.num_examples(client_id)
    if not chosen:
        raise ValueError(f'no test clients left to evaluate: all {len(test.client_ids)} are training clients. '
                         'Pass eval_training_clients=True to evaluate on their held-out test data, or use a test '
                         'dataset with other clients.')
    return chosen


def _describe_evaluation(test, eval_ids, training: set, random_clients: bool) -> str:
    """One sentence saying what the evaluation measures (see :attr:`Experiment.evaluation_description`)."""
    examples = sum(test.num_examples(c) for c in eval_ids)
    plural = lambda n, word: f'{n:,} {word}' + ('' if n == 1 else 's')
    sentence = f'held-out test examples of {plural(len(eval_ids), "client")} ({plural(examples, "example")})'
    shared = sum(c in training for c in eval_ids)
    if not shared:
        return sentence + (', none of them training clients' if not random_clients
                           else ', none of them among the clients sampled for training')
    if random_clients:
        return sentence + (f'; training samples its clients from all {len(training):,}, so these clients also '
                           'train, on their other examples')
    return sentence + f', {shared} of them training clients (on their other examples)'


def _continued(state, template: ServerState) -> ServerState:
    """``state`` if it fits the process (``template``); the same model with a fresh server optimizer state
    (counting the rounds already trained) if only the server optimizer differs; else an error."""
    if not isinstance(state, ServerState):
        raise TypeError(f'initial_state must be a ServerState, got {type(state).__name__}.')
    shapes = {k: np.shape(v) for k, v in state.model.trainable.items()}
    expected = {k: np.shape(v) for k, v in template.model.trainable.items()}
    if shapes != expected:
        raise ValueError('cannot continue from this state: it belongs to a different model '
                         f'(weights {shapes}, expected {expected}). Start a new run instead.')
    if [np.shape(s) for s in state.optimizer_state] == [np.shape(s) for s in template.optimizer_state]:
        return state
    counter = np.asarray(state.round_num, dtype=np.asarray(template.optimizer_state[0]).dtype)
    return ServerState(state.model, (counter,) + tuple(template.optimizer_state[1:]))
