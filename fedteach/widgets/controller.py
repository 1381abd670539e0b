"""The dashboard's logic as a plain class, with no widgets: easy to drive and test from Python."""
from __future__ import annotations

import threading
import time

from fedteach.experiment import Experiment, ExperimentConfig

WARM_UP_DELAY = 0.25
"""Seconds a warm-up waits for the settings to settle before it compiles: a slider stepped with the arrow keys or
a number typed changes the settings several times in a row, and a compilation, once started, cannot be stopped."""

_ROUNDS = threading.RLock()
"""Held while an Experiment is built (it seeds Keras' global random state) or trains: warm-ups and runs take
turns, so that a warm-up never changes what a run computes."""

__all__ = ['FIELD_LABELS', 'MODES', 'TrainingController', 'WARM_UP_DELAY', 'describe_changes', 'format_value']

MODES = ('continue', 'restart')
"""What Run does with changed settings: continue from the current model, or restart from scratch."""

FIELD_LABELS = {
    'clients_per_round': 'clients per round', 'client_learning_rate': 'client learning rate',
    'server_learning_rate': 'server learning rate', 'local_epochs': 'local epochs', 'batch_size': 'batch size',
    'shuffle_buffer': 'shuffle buffer', 'rounds': 'rounds per Run', 'seed': 'seed',
    'random_clients': 'random clients each round', 'model': 'model', 'evaluate_every': 'evaluate every (rounds)',
    'eval_clients': 'test clients evaluated', 'algorithm': 'algorithm', 'proximal_mu': 'FedProx mu',
    'server_optimizer': 'server optimizer', 'dp_noise_multiplier': 'DP noise multiplier',
    'dp_clip_norm': 'clip updates to norm', 'dp_delta': 'DP delta', 'quantize_bits': 'quantize updates (bits)',
    'attack': 'attack', 'malicious_fraction': 'malicious share', 'robust_aggregator': 'robust aggregator',
}
"""How the panel and the status line name each :class:`~fedteach.experiment.ExperimentConfig` field."""


def format_value(value) -> str:
    """A setting as the panel and the status line print it: ``0.05``, ``3``, ``on``, ``off``.

    Example:
        >>> format_value(0.05), format_value(0.0501187), format_value(3), format_value(None), format_value(True)
        ('0.05', '0.0501187', '3', 'off', 'on')
    """
    if value is None or value is False:
        return 'off'
    if value is True:
        return 'on'
    if isinstance(value, float):
        return f'{value:g}'
    return str(value)


def describe_changes(old: ExperimentConfig, new: ExperimentConfig) -> str:
    """The settings that differ, as ``'client learning rate 0.02 → 0.05, local epochs 10 → 2'``.

    Example:
        >>> describe_changes(ExperimentConfig(), ExperimentConfig(client_learning_rate=0.05, random_clients=True))
        'client learning rate 0.02 → 0.05, random clients each round off → on'
    """
    return ', '.join(f'{FIELD_LABELS.get(name, name)} {format_value(getattr(old, name))} → '
                     f'{format_value(getattr(new, name))}'
                     for name in ExperimentConfig.__dataclass_fields__ if getattr(old, name) != getattr(new, name))


class TrainingController:
    """Keeps every run of a training session and trains the current one, a "Run" of rounds at a time.

    Each run is an :class:`~fedteach.experiment.Experiment` named
    ``'run <n> (<settings>)'``; ``history`` joins the histories of all runs so
    one plot compares them. :meth:`prepare` picks the run and the rounds the
    next :meth:`run` trains:

    - settings unchanged, or only ``rounds`` changed: the current run goes
      on (one run, one legend entry). If the last Run was stopped before its
      last round and ``rounds`` is unchanged, it resumes that Run: round 3 of
      100 stays round 3 of 100 and the remaining 97 are trained;
    - other settings changed: a new run, which continues from the current
      model (``mode='continue'``, rounds keep counting) or starts from fresh
      weights (``mode='restart'``, or when the model architecture changed).

    ``note`` says which of these happened; ``rounds_done`` / ``rounds_total``
    count the rounds of the current Run.

    Args:
        train: training ``ClientData``.
        test: test ``ClientData``.

    Example:
        >>> import fedteach as ft
        >>> train, test = ft.load_offline_digits(num_clients=5)
        >>> controller = TrainingController(train, test)
        >>> config = ExperimentConfig(local_epochs=1, rounds=2)
        >>> controller.prepare(config).name
        'run 1 (lr=0.02, 3 clients, 1 epoch)'
        >>> len(controller.run())
        2
        >>> controller.prepare(config.replace(rounds=1)).name  # only the rounds: the same run goes on
        'run 1 (lr=0.02, 3 clients, 1 epoch)'
        >>> [e['round'] for e in controller.run()]
        [1, 2, 3]
        >>> controller.prepare(config.replace(client_learning_rate=0.05)).name
        'run 2 (lr=0.05, 3 clients, 1 epoch, from round 3)'
        >>> controller.note
        'New run 2: client learning rate 0.02 → 0.05; it continues from the model after round 3.'
    """

    def __init__(self, train, test):
        self.train, self.test = train, test
        self.warm_up_error: str | None = None  # what went wrong in the last warm-up (never raised), or None
        self._warm_pending = None  # the (config, state) the warm-up thread compiles next
        self._warm_asked = 0.0  # when warm_up was last called (time.monotonic())
        self._warm_thread: threading.Thread | None = None
        self._warm_lock = threading.Lock()  # guards the three fields above
        self.experiments: list[Experiment] = []
        self.experiment: Experiment | None = None
        self.config: ExperimentConfig | None = None
        self.note = ''
        self.new_run = False
        self.rounds_done = self.rounds_total = 0
        self._stop = threading.Event()

    @property
    def history(self) -> list[dict]:
        """History entries of all runs, run after run."""
        return [entry for experiment in self.experiments for entry in experiment.history]

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`stop` was called during the current :meth:`run`."""
        return self._stop.is_set()

    @property
    def unfinished(self) -> bool:
        """True when the current Run stopped (or diverged) before its last round."""
        return self.rounds_done < self.rounds_total

    def prepare(self, config: ExperimentConfig, mode: str = 'continue') -> Experiment:
        """Chooses (and if needed builds) the run and the rounds the next :meth:`run` trains; sets ``note``.

        Args:
            config: the settings for the next rounds (``config.rounds`` rounds).
            mode: ``'continue'`` or ``'restart'`` (see the class docstring).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be 'continue' or 'restart', got {mode!r}.")
        if not isinstance(config, ExperimentConfig):
            raise TypeError(f'config must be an ExperimentConfig, got {type(config).__name__}.')
        with self._warm_lock:  # a warm-up still waiting for the settings to settle: Run compiles them itself
            self._warm_pending = None
        current, previous = self.experiment, self.config
        if current is not None and not current.history and current.initial_state is None:
            self.experiments.remove(current)  # an empty run (stopped or diverged at once) is replaced
            current = self.experiment = None
        number = len(self.experiments) + 1
        same_run = (current is not None and mode == 'continue'
                    and config.replace(rounds=current.config.rounds) == current.config)
        if same_run:
            self.new_run = False
            if self.unfinished and previous is not None and config.rounds == previous.rounds:
                self.note = (f'{current.name} resumes its Run at round {self.rounds_done + 1} of '
                             f'{self.rounds_total}.')
            else:
                self.rounds_done, self.rounds_total = 0, config.rounds
                self.note = f'{current.name} continues from round {current.round_num}.'
            self.config = config
            return current
        changes = describe_changes(previous.replace(rounds=config.rounds), config) if previous is not None else ''
        because = f': {changes}' if changes else ''
        if current is not None and mode == 'continue' and config.model == current.config.model:
            with _ROUNDS:
                experiment = Experiment(self.train, self.test, config,
                                        name=f'run {number} ({config.describe()}, from round {current.round_num})',
                                        initial_state=current.state)
            self.note = f'New run {number}{because}; it continues from the model after round {current.round_num}.'
        else:
            with _ROUNDS:
                experiment = Experiment(self.train, self.test, config, name=f'run {number} ({config.describe()})')
            if current is None:
                self.note = f'Run {number} starts from fresh weights.'
            elif mode == 'restart':
                self.note = f'New run {number}{because}; Restart: it starts from fresh weights.'
            else:
                self.note = f'New run {number}{because}; a new model starts from fresh weights.'
        self.experiments.append(experiment)
        self.experiment, self.config, self.new_run = experiment, config, current is not None
        self.rounds_done, self.rounds_total = 0, config.rounds
        return experiment

    def run(self, callback=None) -> list[dict]:
        """Trains the rest of the prepared Run (``rounds_total - rounds_done`` rounds) until done or :meth:`stop`.

        Args:
            callback: called with each round's history entry, after ``rounds_done`` counts it.

        Returns the history of all runs. Raises what :meth:`Experiment.run`
        raises (e.g. ``DivergenceError``, with every completed round kept).
        """
        if self.experiment is None:
            raise RuntimeError('no run prepared: call prepare(config) first.')
        self._stop.clear()

        def count(entry):
            self.rounds_done += 1
            if callback is not None:
                callback(entry)

        with _ROUNDS:
            self.experiment.run(self.rounds_total - self.rounds_done, callback=count, should_stop=self._stop.is_set)
        return self.history

    def warm_up(self, config: ExperimentConfig, mode: str = 'continue') -> threading.Thread | None:
        """Compiles, in a background thread, what the first round of ``prepare(config, mode)`` will need.

        A new number of clients per round, batch size or model architecture
        needs a new compilation (seconds); the dashboard calls this when a
        setting changes, so that by the time Run is pressed the compiled round
        and evaluation are in the shared cache. The thread builds the
        Experiment that :meth:`prepare` would build and trains one round of it,
        which is then thrown away: no run, history or state changes, and no
        widget is touched. Experiments are built and rounds run one at a time
        (a lock shared with :meth:`prepare` and :meth:`run`): the warm-up
        never changes the random numbers a run draws. The thread starts
        compiling once the settings have not changed for
        :data:`WARM_UP_DELAY` seconds, and calls while it is busy replace its
        next config: a slider stepped through several values compiles its
        last one. :meth:`prepare` (Run) drops a warm-up that has not started:
        the run compiles what it needs itself. An error is kept in
        ``warm_up_error``, never raised: Run reports it if it happens again.

        Returns the warm-up thread, or None when nothing needs compiling (the
        settings continue the current run).

        Example:
            >>> import fedteach as ft
            >>> train, test = ft.load_offline_digits(num_clients=8)
            >>> controller = TrainingController(train, test)
            >>> config = ExperimentConfig(local_epochs=1, rounds=1)
            >>> controller.warm_up(config.replace(clients_per_round=5)).join()
            >>> controller.warm_up_error, controller.experiments
            (None, [])
        """
        if mode not in MODES:
            raise ValueError(f"mode must be 'continue' or 'restart', got {mode!r}.")
        current = self.experiment
        if current is not None and mode == 'continue' and config.replace(rounds=current.config.rounds) == \
                current.config:
            return None
        with self._warm_lock:
            self._warm_pending = (config, current.state if current is not None and mode == 'continue'
                                  and config.model == current.config.model else None)
            self._warm_asked = time.monotonic()
            if self._warm_thread is None or not self._warm_thread.is_alive():
                self._warm_thread = threading.Thread(target=self._warm, daemon=True, name='fedteach-warm-up')
                self._warm_thread.start()
            return self._warm_thread

    def _warm(self) -> None:
        while True:
            with self._warm_lock:
                if self._warm_pending is None:
                    return
                settling = self._warm_asked + WARM_UP_DELAY - time.monotonic()
                if settling <= 0:
                    (config, state), self._warm_pending = self._warm_pending, None
            if settling > 0:
                time.sleep(settling)
                continue
            try:
                with _ROUNDS:
                    Experiment(self.train, self.test, config, initial_state=state).run_round(evaluate=True)
                self.warm_up_error = None
            except Exception as error:  # noqa: BLE001 - a warm-up must never raise into the UI; Run reports it
                self.warm_up_error = f'{type(error).__name__}: {error}'

    def stop(self) -> None:
        """Asks a running :meth:`run` (e.g. in another thread) to stop after the current round."""
        self._stop.set()

    def reset(self) -> None:
        """Forgets all runs: the next :meth:`prepare` starts run 1 from fresh weights."""
        self.experiments, self.experiment, self.config, self.note = [], None, None, ''
        self.new_run, self.rounds_done, self.rounds_total = False, 0, 0
