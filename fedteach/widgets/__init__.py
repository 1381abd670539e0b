"""Jupyter widgets for the course: client explorer, hyperparameter panel, training dashboard.

The logic lives in plain classes (:class:`TrainingController`,
:class:`~fedteach.experiment.Experiment`); the widgets are a thin view that
pytest drives from Python (``slider.value = ...``, ``button.click()``).

Example:
    >>> import fedteach as ft
    >>> from fedteach.widgets import HyperparameterPanel
    >>> from fedteach.experiment import ExperimentConfig
    >>> HyperparameterPanel().config == ExperimentConfig()
    True

In a notebook the widgets show a static picture where no kernel runs (a
static page), and ``TrainingDashboard.run(block=True)`` and
``ClientExplorer.snapshot()`` return a :class:`Snapshot`: the figure and
the table as ordinary outputs.
"""
from fedteach.widgets._display import Snapshot
from fedteach.widgets.controller import MODES, TrainingController
from fedteach.widgets.dashboard import TrainingDashboard, metrics_table
from fedteach.widgets.explorer import ClientExplorer
from fedteach.widgets.panel import BASIC_FIELDS, HyperparameterPanel, LogFloatInput

__all__ = ['BASIC_FIELDS', 'ClientExplorer', 'HyperparameterPanel', 'LogFloatInput', 'MODES', 'Snapshot',
           'TrainingController', 'TrainingDashboard', 'metrics_table']
