"""The dashboard's logic as a plain class, with no widgets: easy to drive and test from Python."""
from __future__ import annotations

import threading

from fedteach.experiment import Experiment, ExperimentConfig

__all__ = ['TrainingController', 'MODES']

MODES = ('continue', 'restart')
"""What Run does with changed settings: continue from the current model, or restart from scratch."""


class TrainingController:
    """Keeps every run of a training session and trains the current one.

    Each run is an :class:`~fedteach.experiment.Experiment` named
    ``'run <n> (<settings>)'``; ``history`` joins the histories of all runs so
    one plot compares them. :meth:`prepare` picks the run the next rounds
    go to: the current one when the settings did not change, otherwise a new
    run that either continues from the current model (``mode='continue'``,
    rounds keep counting) or starts from fresh weights (``mode='restart'``).

    Args:
        train: training ``ClientData``.
        test: test ``ClientData``.

    Example:
        >>> import fedteach as ft
        >>> from fedteach.experiment import ExperimentConfig
        >>> train, test = ft.load_offline_digits(num_clients=5)
        >>> controller = TrainingController(train, test)
        >>> config = ExperimentConfig(local_epochs=1, rounds=2)
        >>> controller.prepare(config).name
        'run 1 (lr=0.02, 3 clients, 1 epoch)'
        >>> len(controller.run())
        2
        >>> controller.prepare(config.replace(client_learning_rate=0.05)).name
        'run 2 (lr=0.05, 3 clients, 1 epoch, from round 2)'
        >>> [e['round'] for e in controller.run(rounds=1)]
        [1, 2, 3]
    """

    def __init__(self, train, test):
        self.train, self.test = train, test
        self.experiments: list[Experiment] = []
        self.experiment: Experiment | None = None
        self.note = ''
        self._stop = threading.Event()

    @property
    def history(self) -> list[dict]:
        """History entries of all runs, run after run."""
        return [entry for experiment in self.experiments for entry in experiment.history]

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`stop` was called during the current :meth:`run`."""
        return self._stop.is_set()

    def prepare(self, config: ExperimentConfig, mode: str = 'continue') -> Experiment:
        """Chooses (and if needed builds) the run that the next :meth:`run` trains; sets ``note``.

        Args:
            config: the settings for the next rounds.
            mode: ``'continue'`` or ``'restart'`` (see the class docstring).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be 'continue' or 'restart', got {mode!r}.")
        if not isinstance(config, ExperimentConfig):
            raise TypeError(f'config must be an ExperimentConfig, got {type(config).__name__}.')
        current = self.experiment
        if current is not None and not current.history and current.initial_state is None:
            self.experiments.remove(current)  # an empty run (stopped or diverged at once) is replaced
            current = None
        number = len(self.experiments) + 1
        self.note = ''
        if current is not None and mode == 'continue' and config == current.config:
            self.note = f'{current.name} continues from round {current.round_num}.'
            return current
        if current is not None and mode == 'continue' and config.model == current.config.model:
            experiment = Experiment(self.train, self.test, config,
                                    name=f'run {number} ({config.describe()}, from round {current.round_num})',
                                    initial_state=current.state)
            self.note = f'New settings: {experiment.name} continues from the model after round {current.round_num}.'
        else:
            experiment = Experiment(self.train, self.test, config, name=f'run {number} ({config.describe()})')
            if current is not None and mode == 'continue':
                self.note = f'The model changed to {config.model!r}: {experiment.name} starts from fresh weights.'
            else:
                self.note = f'{experiment.name} starts from fresh weights.'
        self.experiments.append(experiment)
        self.experiment = experiment
        return experiment

    def run(self, rounds: int | None = None, callback=None) -> list[dict]:
        """Trains the current run (``rounds`` or its ``config.rounds``) until done or :meth:`stop`.

        Returns the history of all runs. Raises what :meth:`Experiment.run`
        raises (e.g. ``DivergenceError``, with every completed round kept).
        """
        if self.experiment is None:
            raise RuntimeError('no run prepared: call prepare(config) first.')
        self._stop.clear()
        self.experiment.run(rounds, callback=callback, should_stop=self._stop.is_set)
        return self.history

    def stop(self) -> None:
        """Asks a running :meth:`run` (e.g. in another thread) to stop after the current round."""
        self._stop.set()

    def reset(self) -> None:
        """Forgets all runs: the next :meth:`prepare` starts run 1 from fresh weights."""
        self.experiments, self.experiment, self.note = [], None, ''
