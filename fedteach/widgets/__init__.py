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
"""
from fedteach.widgets.controller import MODES, TrainingController
from fedteach.widgets.dashboard import TrainingDashboard, metrics_table
from fedteach.widgets.explorer import ClientExplorer
from fedteach.widgets.panel import HyperparameterPanel

__all__ = ['ClientExplorer', 'HyperparameterPanel', 'TrainingDashboard', 'TrainingController', 'MODES',
           'metrics_table']
