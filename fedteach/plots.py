"""Plots for the course: convergence of runs, label distributions, a writer's samples, partitions, a round.

Every function returns a :class:`matplotlib.figure.Figure` and accepts an
existing ``ax`` (or ``fig``) to draw into. New figures are made without
``pyplot`` (as :class:`Figure`, a Figure with a ``_repr_png_``): in Jupyter a
returned figure then shows exactly once (a pyplot figure returned as the
cell's value is shown twice; a bare Figure shows only as text unless pyplot
was imported), nothing accumulates in pyplot's figure list, and drawing from
the dashboard's worker thread is safe. Show one with ``display(fig)``
or by leaving it as a cell's last value; save it with ``fig.savefig(path)``.

Colours: the Okabe-Ito palette for runs and Paul Tol's "muted" palette for
the ten digit labels, both distinguishable with common colour-vision
deficiencies; heatmaps use viridis.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import io
import textwrap

import numpy as np

from matplotlib import figure as _mpl_figure
from matplotlib.ticker import MaxNLocator

from fedteach.data import label_histogram, label_matrix

__all__ = ['Figure', 'OKABE_ITO', 'LABEL_COLORS', 'accuracy_ylim', 'plot_convergence', 'plot_federated_round', 'plot_label_distribution', 'plot_label_histogram',
           'plot_label_heatmap', 'plot_samples', 'plot_partition_comparison', 'runs_of']

OKABE_ITO = ('#0072B2', '#E69F00', '#009E73', '#D55E00', '#56B4E9', '#CC79A7', '#000000', '#F0E442')
"""Run colours (Okabe & Ito 2008), darkest and most distinct first."""

LABEL_COLORS = ('#332288', '#88CCEE', '#44AA99', '#117733', '#999933', '#DDCC77', '#CC6677', '#882255',
                '#AA4499', '#BBBBBB')
"""Colours of labels 0-9 (Paul Tol's muted palette)."""

class Figure(_mpl_figure.Figure):
    """A matplotlib Figure that shows itself in Jupyter (once), with or without ``pyplot`` imported.

    Example:
        >>> Figure(figsize=(2, 1))._repr_png_()[:4]
        b'\\x89PNG'
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format='png', dpi=100, bbox_inches='tight')
        return buffer.getvalue()


_METRIC_NAMES = {'loss': 'loss (cross-entropy)', 'accuracy': 'accuracy'}


def _new_figure(fig, ax, figsize):
    if ax is not None:
        return ax.figure, ax
    fig = fig if fig is not None else Figure(figsize=figsize, layout='constrained')
    return fig, None


def _label_colors(num_classes: int):
    if num_classes <= len(LABEL_COLORS):
        return list(LABEL_COLORS[:num_classes])
    from matplotlib import colormaps
    return [colormaps['viridis'](i / max(num_classes - 1, 1)) for i in range(num_classes)]


def runs_of(histories_or_runs) -> dict[str, list[dict]]:
    """Groups history entries by their ``'run'`` name, in order of first appearance.

    Accepts one history (a list of entry dicts), a list of histories, objects
    with a ``history`` attribute (an :class:`~fedteach.experiment.Experiment`,
    the dashboard's controller), or a ``{name: history}`` dict.

    Example:
        >>> h = [{'run': 'a', 'round': 1}, {'run': 'b', 'round': 1}, {'run': 'a', 'round': 2}]
        >>> {name: len(entries) for name, entries in runs_of(h).items()}
        {'a': 2, 'b': 1}
    """
    runs: dict[str, list[dict]] = {}

    def add(item, name=None):
        if hasattr(item, 'history') and not isinstance(item, Mapping):
            add(item.history)
        elif isinstance(item, Mapping) and 'round' in item:
            runs.setdefault(str(item.get('run', name if name is not None else 'run')), []).append(item)
        elif isinstance(item, Mapping):
            for key, value in item.items():
                add(value, name=key)
        elif isinstance(item, Iterable) and not isinstance(item, (str, bytes)):
            for value in item:
                add(value, name=name)
        else:
            raise TypeError(f'expected history entries (dicts with a "round"), histories or experiments, '
                            f'got {type(item).__name__}.')

    add(histories_or_runs)
    return runs


def _continued_from(runs, name, key):
    """The (round, value) a run continued from: the latest earlier run's entry at its first round - 1."""
    first = runs[name][0]['round']
    names = list(runs)
    for earlier in reversed(names[:names.index(name)]):
        match = [e for e in runs[earlier] if e['round'] == first - 1]
        if match:
            value = match[-1].get(key)
            return None if value is None else (first - 1, value)
    return None


def plot_convergence(histories_or_runs, metrics: Sequence[str] = ('loss', 'accuracy'), *, fig=None, axes=None,
                     title: str | None = None, figsize=None, evaluated_on: str | None = None,
                     loss_scale: str = 'auto') -> Figure:
    """Training (solid) and evaluation (dashed) metrics per round, one panel per metric, one colour per run.

    Training metrics are averaged over the clients' local training during
    the round, on their own data; evaluation metrics come from the model
    after the round, on whatever data the caller evaluated it on: the
    caption says so only as precisely as it is told (``evaluated_on``, or
    the entries' ``'evaluated_on'``), else just "evaluation". The gap between
    the two is the tutorial's caveat made visible.

    Args:
        histories_or_runs: history entries as :class:`~fedteach.experiment.Experiment`
            records them (see :func:`runs_of` for the accepted shapes); runs
            are told apart by the entries' ``'run'`` name.
        metrics: metric names; each panel plots ``train_<metric>`` and
            ``eval_<metric>`` (rounds without evaluation are skipped).
        fig: a figure to draw into (new panels are added to it).
        axes: existing axes, one per metric.
        title: a title over the panels.
        figsize: size of a new figure (default grows with the number of panels).
        evaluated_on: what the evaluation measured, as a phrase that follows
            "evaluation on" (e.g. an Experiment's ``evaluation_description``).
            Default: the entries' ``'evaluated_on'`` when the runs agree on
            it (each run's own otherwise), else no claim at all.
        loss_scale: ``'linear'``, ``'log'``, or ``'auto'``: log when the
            largest loss is more than 10 times the median of the plotted
            losses (a diverging run, or runs orders of magnitude apart), so
            that one run does not flatten the others.

    Returns:
        The figure. Its lines are labelled ``'<run> train'`` and ``'<run> evaluation'``;
        a run that continued another (its first round follows a round of an
        earlier run) is joined to it by an unlabelled segment (``'_nolegend_'``).

    Example:
        >>> history = [{'run': 'run 1', 'round': r, 'train_loss': 2.0 / r, 'eval_loss': 2.2 / r,
        ...             'train_accuracy': 0.3 * r, 'eval_accuracy': 0.25 * r} for r in (1, 2, 3)]
        >>> fig = plot_convergence(history, evaluated_on='the 20 test writers')
        >>> [line.get_label() for line in fig.axes[0].lines]
        ['run 1 train', 'run 1 evaluation']
        >>> print(fig.get_suptitle())
        solid: training (clients' own data, during the round)
        dashed: evaluation on the 20 test writers
        >>> fig.axes[0].get_yscale()
        'linear'
    """
    if loss_scale not in ('linear', 'log', 'auto'):
        raise ValueError(f"loss_scale must be 'linear', 'log' or 'auto', got {loss_scale!r}.")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    runs = runs_of(histories_or_runs)
    if axes is not None:
        axes = list(np.ravel(axes))
        fig = axes[0].figure
    else:
        fig = fig if fig is not None else Figure(figsize=figsize or (5.2 * len(metrics), 4.4), layout='constrained')
        axes = list(np.ravel(fig.subplots(1, len(metrics), squeeze=False)))
    if len(axes) != len(metrics):
        raise ValueError(f'got {len(axes)} axes for {len(metrics)} metrics {metrics}.')
    for ax, metric in zip(axes, metrics):
        values = []
        for i, (name, entries) in enumerate(runs.items()):
            color = OKABE_ITO[i % len(OKABE_ITO)]
            for kind, style, label in (('train', '-', 'train'), ('eval', '--', 'evaluation')):
                points = [(e['round'], e[f'{kind}_{metric}']) for e in entries
                          if e.get(f'{kind}_{metric}') is not None]
                start = _continued_from(runs, name, f'{kind}_{metric}')
                if points and start is not None:  # joins the run it continued from, without a marker
                    ax.plot([start[0], points[0][0]], [start[1], points[0][1]], linestyle=style, linewidth=2,
                            color=color, label='_nolegend_')
                if points:
                    x, y = zip(*points)
                    values.extend(y)
                    ax.plot(x, y, linestyle=style, marker='o' if kind == 'train' else 's', markersize=4,
                            linewidth=2, color=color, label=f'{name} {label}')
        ax.set_title(metric.replace('_', ' ').capitalize())
        ax.set_xlabel('round')
        ax.set_ylabel(_METRIC_NAMES.get(metric, metric.replace('_', ' ')))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if 'accuracy' in metric:
            ax.set_ylim(0, 1)
        if 'loss' in metric and _log_scale(values, loss_scale):
            ax.set_yscale('log')
            ax.set_ylabel(f'{ax.get_ylabel()}, log scale')
        if not runs:
            ax.text(0.5, 0.5, 'no rounds yet', transform=ax.transAxes, ha='center', va='center', color='0.4')
    if runs:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc='outside lower center', ncols=min(2, len(labels)) if len(runs) > 1 else 2,
                   fontsize='small', frameon=False)
    caption = '\n'.join(_convergence_caption(runs, metrics, evaluated_on, width=int(16 * fig.get_figwidth())))
    fig.suptitle(f'{title}\n{caption}' if title else caption, fontsize='small' if not title else 'medium')
    return fig


def _log_scale(losses, loss_scale: str) -> bool:
    """Whether a loss panel gets a log axis: always, never, or when the largest loss dwarfs the median."""
    positive = np.asarray([v for v in losses if np.isfinite(v) and v > 0], dtype=float)
    if loss_scale != 'auto' or positive.size == 0:
        return loss_scale == 'log' and positive.size > 0
    return bool(positive.max() > 10 * np.median(positive))


def _convergence_caption(runs, metrics, evaluated_on, width: int) -> list[str]:
    """The caption's lines: what solid and dashed lines measure, and no more than the caller said."""
    lines = ["solid: training (clients' own data, during the round)"]
    evaluated = {name: entries for name, entries in runs.items()
                 if any(e.get(f'eval_{m}') is not None for e in entries for m in metrics)}
    if not evaluated:
        return lines
    if evaluated_on is not None:
        descriptions = {'': evaluated_on}
    else:
        descriptions = {name: next((e['evaluated_on'] for e in entries if e.get('evaluated_on')), None)
                        for name, entries in evaluated.items()}
        if len(set(descriptions.values())) == 1:
            descriptions = {'': next(iter(descriptions.values()))}
    for name, description in descriptions.items():
        who = f' ({name})' if name else ''
        text = f'dashed{who}: evaluation' + (f' on {description}' if description else '')
        lines.extend(textwrap.wrap(text, width=max(width, 40), subsequent_indent='    '))
    return lines


def accuracy_ylim(ax, values, *, min_span: float = 0.2, annotate: bool = True) -> tuple[float, float]:
    """Y-limits for accuracies that show their differences at their true size.

    Matplotlib's automatic limits stretch any spread to the full axis, so
    0.657 and 0.675 look like a large gap. The window chosen here is at
    least ``min_span`` wide (in accuracy, 0.2 = 20 points), centred on the
    values and kept inside [0, 1]; with ``annotate`` the axes say the spread
    in percentage points. Bars should start at 0: pass ``min_span=1``.

    Args:
        ax: the axes of a line or bar plot of accuracies.
        values: the accuracies plotted (in [0, 1]).
        min_span: the narrowest window shown.
        annotate: write "spread: max - min = N points" into the axes.

    Returns:
        The limits set, ``(low, high)``.

    Example:
        >>> ax = Figure().add_subplot()
        >>> _ = ax.plot([1, 2, 3], [0.657, 0.675, 0.668])
        >>> accuracy_ylim(ax, [0.657, 0.675, 0.668])
        (0.566, 0.766)
        >>> ax.texts[0].get_text()
        'spread: max - min = 1.8 points'
    """
    values = np.asarray(values, dtype=float).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError('accuracy_ylim needs at least one finite accuracy, got none.')
    if not 0 < min_span <= 1:
        raise ValueError(f'min_span must be in (0, 1] (a share of the accuracy axis), got {min_span}.')
    low, high = float(values.min()), float(values.max())
    span = max(min_span, high - low)
    bottom = min(max(0.0, (low + high - span) / 2), 1.0 - span)
    limits = (round(bottom, 6), round(bottom + span, 6))
    ax.set_ylim(*limits)
    if annotate:
        ax.text(0.99, 0.02, f'spread: max - min = {100 * (high - low):.1f} points', transform=ax.transAxes,
                ha='right', va='bottom', fontsize='small', color='0.3')
    return limits


def plot_federated_round(num_clients: int = 3, *, ax=None, fig=None) -> Figure:
    """A diagram of one round of Federated Averaging, in the tutorial's vocabulary.

    The server holds the server state (the model weights) at ``SERVER``;
    the clients hold their data at ``CLIENTS``. One call of ``next``: (1) the
    server broadcasts the weights (``federated_broadcast``), (2) each client
    trains them locally on its own data, (3) the clients' updates are
    aggregated into their weighted mean, weighted by examples
    (``federated_mean``), (4) the server optimizer applies the mean update.

    Args:
        num_clients: clients drawn (2-5; the last one is drawn as "client K").
        ax: axes to draw into.
        fig: figure to draw into.

    Example:
        >>> fig = plot_federated_round()
        >>> texts = ' '.join(t.get_text() for t in fig.axes[0].texts)
        >>> all(word in texts for word in ('@SERVER', '@CLIENTS', 'federated_broadcast', 'federated_mean'))
        True
        >>> len(fig.axes[0].patches)  # server, 3 clients, 3 x (broadcast, aggregate, training), server update
        14
    """
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    if not 2 <= num_clients <= 5:
        raise ValueError(f'num_clients must be between 2 and 5 for the diagram to fit, got {num_clients}.')
    fig, ax = _new_figure(fig, ax, (11, 6.6))
    ax = ax if ax is not None else fig.add_subplot()
    # The clients and the server sit in x 2-11; the margins hold the labels (1) and (3), beside the arrows.
    ax.set_xlim(0, 13)
    ax.set_ylim(0, 7.3)
    ax.set_axis_off()
    broadcast, train, aggregate, update = OKABE_ITO[0], OKABE_ITO[2], OKABE_ITO[3], OKABE_ITO[1]

    def box(x, y, width, height, color, lines):
        ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle='round,pad=0.05,rounding_size=0.15',
                                    facecolor=color, edgecolor='0.3', linewidth=1.2))
        ax.text(x + width / 2, y + height / 2, '\n'.join(lines), ha='center', va='center', fontsize=9,
                linespacing=1.5)

    def arrow(start, end, color, **style):
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle='-|>', mutation_scale=14, linewidth=1.8,
                                     color=color, **style))

    label = dict(fontsize=9, va='center', linespacing=1.4)
    box(2.0, 5.45, 9.0, 1.25, '#EAF2FA', ['SERVER', r'server state @SERVER: model weights $w_t$ (and optimizer state)'])
    width = 1.4
    gap = (9 - num_clients * width) / (num_clients + 1)
    loop = -min(1.4, 4 * (gap - 0.06))  # the training loop's bulge (rad x half its 0.5 height) stays in the gap
    lefts = [2.0 + gap + k * (width + gap) for k in range(num_clients)]
    for k, x in enumerate(lefts):
        name = 'K' if k == num_clients - 1 and num_clients > 3 else f'{k + 1}'
        box(x, 1.25, width, 1.3, '#EEF7F1', [f'client {name}', f'data $D_{{{name}}}$', f'$n_{{{name}}}$ examples',
                                             '@CLIENTS'])
        arrow((x + 0.4, 5.4), (x + 0.4, 2.62), broadcast)
        arrow((x + width - 0.4, 2.62), (x + width - 0.4, 5.4), aggregate)
        arrow((x + width + 0.03, 2.15), (x + width + 0.03, 1.65), train, connectionstyle=f'arc3,rad={loop}')
    arrow((11.05, 6.35), (11.05, 5.8), update, connectionstyle='arc3,rad=-1.4')
    ax.text(lefts[0] + 0.25, 4.0, '(1) broadcast\n' r'the weights $w_t$' '\nfederated_broadcast',
            color=broadcast, ha='right', **label)
    ax.text(lefts[-1] + width - 0.25, 4.0, '(3) aggregate: the\nweighted mean update\n'
            r'$\Delta_t = \Sigma_k\, n_k \Delta_t^k \;/\; \Sigma_k\, n_k$' '\nfederated_mean', color=aggregate,
            ha='left', **dict(label, linespacing=1.6))
    ax.text(6.5, 0.55, '(2) local training on each client\'s own data: a few epochs of SGD (client learning '
            'rate $\\eta$)\n' r"from $w_t$ to $w_t^k$; the client's update is $\Delta_t^k = w_t^k - w_t$",
            color=train, ha='center', **label)
    ax.text(10.75, 7.05, '(4) server update: ' r'$w_{t+1} = w_t + \eta_s \Delta_t$ (FedAvg: $\eta_s = 1$)',
            color=update, ha='right', **label)
    ax.set_title('One round, next: SERVER_STATE, FEDERATED_DATA -> SERVER_STATE, TRAINING_METRICS',
                 fontsize=10, pad=14)
    return fig


def plot_label_histogram(client_data, client_id: str, num_classes: int = 10, *, ax=None, fig=None) -> Figure:
    """Bar chart of one client's label counts.

    Example:
        >>> import fedteach as ft
        >>> train, _ = ft.load_offline_digits(num_clients=3)
        >>> fig = plot_label_histogram(train, 'writer_000')
        >>> len(fig.axes[0].patches)
        10
    """
    fig, ax = _new_figure(fig, ax, (5, 3))
    ax = ax if ax is not None else fig.add_subplot()
    counts = label_histogram(client_data, client_id, num_classes)
    ax.bar(np.arange(num_classes), counts, color=_label_colors(num_classes), edgecolor='0.25', linewidth=0.5)
    ax.set_xticks(np.arange(num_classes) if num_classes <= 20 else np.arange(0, num_classes, 5))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel('label')
    ax.set_ylabel('examples')
    ax.set_title(f'{client_id}: labels of {int(counts.sum())} examples')
    ax.grid(True, axis='y', alpha=0.3)
    return fig


def plot_label_distribution(client_data, client_ids: Sequence[str], num_classes: int = 10, *,
                            ax=None, fig=None, normalize: bool = False) -> Figure:
    """Stacked bars of label counts, one bar per client: how different the clients' data is.

    Args:
        client_data: the federated dataset.
        client_ids: the clients to show (e.g. ``train.client_ids[:10]``).
        num_classes: number of labels.
        ax: axes to draw into.
        fig: figure to draw into.
        normalize: show each client's label proportions instead of counts.

    Example:
        >>> import fedteach as ft
        >>> train, _ = ft.load_offline_digits(num_clients=4)
        >>> fig = plot_label_distribution(train, train.client_ids)
        >>> len(fig.axes[0].containers)  # one bar container per label
        10
    """
    client_ids = [client_ids] if isinstance(client_ids, str) else list(client_ids)
    fig, ax = _new_figure(fig, ax, (max(5.0, 0.45 * len(client_ids) + 2.5), 4))
    ax = ax if ax is not None else fig.add_subplot()
    matrix = label_matrix(client_data, client_ids, num_classes).astype(float)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    x, bottom = np.arange(len(client_ids)), np.zeros(len(client_ids))
    for label, color in enumerate(_label_colors(num_classes)):
        ax.bar(x, matrix[:, label], bottom=bottom, color=color, label=str(label), width=0.8,
               edgecolor='white', linewidth=0.3)
        bottom += matrix[:, label]
    ax.set_xticks(x, client_ids, rotation=60 if len(client_ids) > 4 else 0, ha='right' if len(client_ids) > 4
                  else 'center', fontsize='small')
    ax.set_xlabel('client')
    ax.set_ylabel('share of examples' if normalize else 'examples')
    ax.set_title('Labels per client')
    if num_classes <= 20:
        ax.legend(title='label', loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize='small', frameon=False)
    return fig


def _heatmap(ax, matrix, row_labels, title, vmax=None, annotate=True):
    image = ax.imshow(matrix, aspect='auto', cmap='viridis', vmin=0, vmax=vmax, interpolation='nearest')
    ax.set_xticks(np.arange(matrix.shape[1]) if matrix.shape[1] <= 20 else np.arange(0, matrix.shape[1], 5))
    ax.set_xlabel('label')
    ax.set_ylabel('client')
    if len(row_labels) <= 30:
        ax.set_yticks(np.arange(len(row_labels)), row_labels, fontsize='small' if len(row_labels) > 12 else None)
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    if annotate and matrix.shape[0] <= 20 and matrix.shape[1] <= 12:
        top = vmax if vmax is not None else max(matrix.max(), 1)
        for (row, col), value in np.ndenumerate(matrix):
            if value:
                ax.text(col, row, f'{int(value)}', ha='center', va='center', fontsize=7,
                        color='black' if value > 0.6 * top else 'white')
    return image


def plot_label_heatmap(client_data, client_ids: Sequence[str] | None = None, num_classes: int = 10, *,
                       ax=None, fig=None) -> Figure:
    """A clients x labels heatmap of example counts: non-IID data shows as scattered bright cells.

    Args:
        client_data: the federated dataset.
        client_ids: rows to show (default: all clients; keep it to a few dozen).
        num_classes: number of labels.
        ax: axes to draw into.
        fig: figure to draw into.

    Example:
        >>> import fedteach as ft
        >>> train, _ = ft.load_offline_digits(num_clients=6)
        >>> fig = plot_label_heatmap(train)
        >>> fig.axes[0].images[0].get_array().shape
        (6, 10)
    """
    ids = list(client_data.client_ids if client_ids is None else client_ids)
    fig, ax = _new_figure(fig, ax, (6.5, max(3.0, 0.28 * len(ids) + 1.5)))
    ax = ax if ax is not None else fig.add_subplot()
    matrix = label_matrix(client_data, ids, num_classes)
    image = _heatmap(ax, matrix, ids, f'Label counts of {len(ids)} clients')
    fig.colorbar(image, ax=ax, label='examples')
    return fig


def plot_samples(client_data, client_id: str, n: int = 10, *, ncols: int = 5, fig=None) -> Figure:
    """A grid of a writer's first ``n`` examples, each titled with its label.

    Ink is dark on white, as on paper (EMNIST's pixels: 1.0 background, 0.0 ink).

    Example:
        >>> import fedteach as ft
        >>> train, _ = ft.load_offline_digits(num_clients=3)
        >>> fig = plot_samples(train, 'writer_001', n=6)
        >>> len(fig.axes), fig.axes[0].get_title().startswith('label ')
        (6, True)
    """
    arrays = client_data.client_arrays(client_id)
    pixels, labels = np.asarray(arrays['pixels']), np.asarray(arrays['label']).reshape(-1)
    n = min(n, len(labels))
    if n < 1:
        raise ValueError(f'client {client_id!r} has no examples to show (n={n}).')
    fig = _image_grid(pixels[:n], labels[:n], ncols, fig)
    fig.suptitle(f'{client_id}: {n} of {len(labels)} examples')
    return fig


def plot_batch(batch, n: int = 10, *, ncols: int = 10, fig=None) -> Figure:
    """The first ``n`` images of a preprocessed batch, as the model receives them, with a value scale.

    ``batch`` is a dict with flattened (or 28x28) images under ``'x'`` and labels under ``'y'``, as the
    tutorial's ``preprocess`` makes it. The colour bar shows which pixel values are ink and background.

    Example:
        >>> import numpy as np
        >>> batch = {'x': np.ones((4, 784), np.float32), 'y': np.arange(4).reshape(4, 1)}
        >>> fig = plot_batch(batch)
        >>> len(fig.axes), fig.axes[0].get_title()
        (5, 'label 0')
    """
    pixels = np.asarray(batch['x'], dtype=np.float32)
    labels = np.asarray(batch['y']).reshape(-1)
    n = min(n, len(labels))
    if n < 1 or pixels.size // max(len(pixels), 1) != 28 * 28:
        raise ValueError(f"plot_batch needs a batch of 28x28 images under 'x' (flattened or not), "
                         f"got shape {pixels.shape}.")
    fig = _image_grid(pixels[:n], labels[:n], ncols, fig)
    image = fig.axes[0].images[0]
    fig.colorbar(image, ax=fig.axes, shrink=0.8, label='pixel value')
    fig.suptitle(f'{n} of the batch\'s {len(labels)} images, as the model sees them')
    return fig


def _image_grid(pixels, labels, ncols: int, fig) -> Figure:
    """Images in a grid (ink dark on white, values 0..1), each titled with its label."""
    n = len(labels)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig = fig if fig is not None else Figure(figsize=(1.5 * ncols, 1.65 * nrows + 0.5), layout='constrained')
    axes = np.ravel(fig.subplots(nrows, ncols, squeeze=False))
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            ax.remove()
        else:
            ax.imshow(pixels[i].reshape(28, 28), cmap='gray', vmin=0.0, vmax=1.0, interpolation='nearest')
            ax.set_title(f'label {int(labels[i])}', fontsize='medium')
    return fig


def plot_partition_comparison(labels, partitions: Mapping[str, Mapping[str, np.ndarray]],
                              num_classes: int | None = None, *, fig=None, max_clients: int = 30) -> Figure:
    """Side-by-side clients x labels heatmaps of several partitions of one labelled dataset.

    All panels share one colour scale, so a partition that concentrates
    labels (shards, small Dirichlet alpha) shows bright, sparse cells next to
    IID's even rows.

    Args:
        labels: one integer label per example of the central dataset.
        partitions: ``{name: partition}``, each ``{client_id: example indices}``
            as ``ft.partition_iid`` / ``partition_dirichlet`` / ``partition_shards`` return.
        num_classes: number of labels (default: ``max(labels) + 1``).
        fig: figure to draw into.
        max_clients: show at most this many clients of each partition.

    Example:
        >>> import fedteach as ft, numpy as np
        >>> labels = np.repeat(np.arange(10), 20)
        >>> fig = plot_partition_comparison(labels, {
        ...     'IID': ft.partition_iid(len(labels), 8),
        ...     'shards': ft.partition_shards(labels, 8, shards_per_client=2)})
        >>> [ax.get_title().split(':')[0] for ax in fig.axes[:2]]
        ['IID', 'shards']
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if not partitions:
        raise ValueError('partitions is empty: pass e.g. {"IID": ft.partition_iid(len(labels), 10)}.')
    matrices = {}
    for name, partition in partitions.items():
        ids = list(partition)[:max_clients]
        matrices[name] = (ids, np.stack([np.bincount(labels[np.asarray(partition[c], np.int64)],
                                                     minlength=num_classes) for c in ids]))
    rows = max(len(ids) for ids, _ in matrices.values())
    fig = fig if fig is not None else Figure(figsize=(4.2 * len(partitions) + 1.2, max(3.2, 0.25 * rows + 1.8)),
                                             layout='constrained')
    axes = np.ravel(fig.subplots(1, len(partitions), squeeze=False, sharey=False))
    vmax = max(m.max() for _, m in matrices.values())
    image = None
    for ax, (name, (ids, matrix)) in zip(axes, matrices.items()):
        sizes = matrix.sum(axis=1)
        labels_per_client = (matrix > 0).sum(axis=1).mean()
        size = (f'{int(sizes.min())} examples each' if sizes.min() == sizes.max()
                else f'{int(sizes.min())}-{int(sizes.max())} examples')
        image = _heatmap(ax, matrix, ids, f'{name}: {size},\n{labels_per_client:.1f} labels per client',
                         vmax=vmax, annotate=False)
        if ax is not axes[0]:
            ax.set_ylabel('')
    fig.colorbar(image, ax=list(axes), label='examples')
    return fig
