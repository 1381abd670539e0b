"""Plots return figures with the expected content; PNGs are saved under artifacts/ to look at."""
import pathlib

import matplotlib

matplotlib.use('Agg')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import fedteach as ft  # noqa: E402
from fedteach import plots  # noqa: E402

ARTIFACTS = pathlib.Path(__file__).resolve().parents[1] / 'artifacts'


def save(fig, name):
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f'{name}.png'
    fig.savefig(path, dpi=100)
    assert path.stat().st_size > 5000
    return path


@pytest.fixture(scope='module')
def train():
    return ft.load_offline_digits(num_clients=12)[0]


def fake_history(run, rounds, lr, every=1):
    out = []
    for r in range(1, rounds + 1):
        evaluated = r % every == 0 or r == rounds
        out.append({'run': run, 'round': r, 'train_loss': 2.3 * np.exp(-lr * r), 'train_accuracy': 1 - np.exp(-lr * r),
                    'eval_loss': 2.5 * np.exp(-0.8 * lr * r) if evaluated else None,
                    'eval_accuracy': 0.9 * (1 - np.exp(-0.8 * lr * r)) if evaluated else None,
                    'num_examples': 300, 'seconds': 0.1, 'clients': ['writer_000']})
    return out


def test_convergence_runs_and_legend():
    history = fake_history('run 1 (lr=0.02, 3 clients)', 10, 0.2) + fake_history('run 2 (lr=0.1, 3 clients)', 8, 0.5,
                                                                                every=3)
    fig = plots.plot_convergence(history)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    loss, accuracy = fig.axes
    labels = [line.get_label() for line in loss.lines if line.get_label() != '_nolegend_']
    assert labels == ['run 1 (lr=0.02, 3 clients) train', 'run 1 (lr=0.02, 3 clients) evaluation',
                      'run 2 (lr=0.1, 3 clients) train', 'run 2 (lr=0.1, 3 clients) evaluation']
    assert [line.get_linestyle() for line in loss.lines] == ['-', '--', '-', '--']
    assert loss.lines[0].get_color() == loss.lines[1].get_color() != loss.lines[2].get_color()
    assert list(loss.lines[3].get_xdata()) == [3, 6, 8]  # rounds without evaluation are skipped
    assert accuracy.get_ylim() == (0, 1) and loss.get_xlabel() == 'round'
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == 4
    save(fig, 'convergence')


def test_convergence_joins_a_continued_run():
    history = fake_history('run 1', 4, 0.2) + [dict(e, round=e['round'] + 4) for e in fake_history('run 2', 3, 0.5)]
    ax = plots.plot_convergence(history).axes[0]
    labelled = [line for line in ax.lines if not line.get_label().startswith('_')]
    joins = [line for line in ax.lines if line.get_label() == '_nolegend_']
    assert len(labelled) == 4 and len(joins) == 2
    assert [list(line.get_xdata()) for line in joins] == [[4, 5], [4, 5]]


def test_convergence_accepts_experiments_dicts_and_empty():
    assert set(plots.runs_of({'x': fake_history('x', 2, 0.1)})) == {'x'}
    fig = plots.plot_convergence([], metrics=['loss'])
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 0
    with pytest.raises(TypeError, match='expected history entries'):
        plots.plot_convergence([1, 2])
    existing = Figure().subplots(1, 2)
    fig = plots.plot_convergence(fake_history('a', 3, 0.1), axes=existing)
    assert fig is existing[0].figure


def test_label_distribution_and_heatmap(train):
    ids = train.client_ids[:8]
    fig = plots.plot_label_distribution(train, ids)
    ax = fig.axes[0]
    assert len(ax.containers) == 10 and [t.get_text() for t in ax.get_xticklabels()] == ids
    heights = np.sum([[bar.get_height() for bar in c] for c in ax.containers], axis=0)
    assert heights.tolist() == [train.num_examples(c) for c in ids]
    save(fig, 'label_distribution')

    fig = plots.plot_label_heatmap(train)
    matrix = fig.axes[0].images[0].get_array()
    assert np.array_equal(matrix, ft.label_matrix(train)) and len(fig.axes) == 2  # heatmap + colorbar
    save(fig, 'label_heatmap')

    fig = plots.plot_label_histogram(train, 'writer_003')
    assert [p.get_height() for p in fig.axes[0].patches] == ft.label_histogram(train, 'writer_003').tolist()
    save(fig, 'label_histogram')


def test_samples(train):
    fig = plots.plot_samples(train, 'writer_002', n=10)
    labels = train.client_arrays('writer_002')['label'][:10]
    assert [ax.get_title() for ax in fig.axes] == [f'label {int(v)}' for v in labels]
    image = fig.axes[0].images[0]
    assert image.get_cmap().name == 'gray' and image.get_clim() == (0.0, 1.0)
    save(fig, 'samples')


def test_partition_comparison():
    labels = np.repeat(np.arange(10), 60)
    partitions = {'IID': ft.partition_iid(len(labels), 12),
                  'Dirichlet alpha=0.3': ft.partition_dirichlet(labels, 12, alpha=0.3),
                  'shards (2 per client)': ft.partition_shards(labels, 12, shards_per_client=2)}
    fig = plots.plot_partition_comparison(labels, partitions)
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title().split(':')[0] for ax in heatmaps] == list(partitions)
    assert len({ax.images[0].get_clim() for ax in heatmaps}) == 1  # one shared colour scale
    assert heatmaps[2].images[0].get_array().sum() == len(labels)
    save(fig, 'partition_comparison')


def test_convergence_caption_says_only_what_the_caller_says_about_evaluation():
    history = fake_history('run 1', 4, 0.3)
    neutral = plots.plot_convergence(history).get_suptitle()
    assert neutral.splitlines() == ["solid: training (clients' own data, during the round)", 'dashed: evaluation']
    told = plots.plot_convergence(history, evaluated_on="the 3 training clients' own test examples")
    assert "dashed: evaluation on the 3 training clients' own test examples" in told.get_suptitle()
    assert 'held-out' not in neutral + told.get_suptitle()
    training_only = [dict(e, eval_loss=None, eval_accuracy=None) for e in history]
    assert 'dashed' not in plots.plot_convergence(training_only).get_suptitle()


def test_convergence_caption_takes_the_description_recorded_in_the_history():
    same = [dict(e, evaluated_on='10 test writers') for e in fake_history('a', 3, 0.3) + fake_history('b', 3, 0.5)]
    assert plots.plot_convergence(same).get_suptitle().splitlines()[1] == 'dashed: evaluation on 10 test writers'
    differ = ([dict(e, evaluated_on='10 test writers') for e in fake_history('a', 3, 0.3)]
              + [dict(e, evaluated_on='the training writers') for e in fake_history('b', 3, 0.5)])
    lines = plots.plot_convergence(differ).get_suptitle().splitlines()
    assert lines[1:] == ['dashed (a): evaluation on 10 test writers', 'dashed (b): evaluation on the training writers']


def test_a_diverging_run_gets_a_log_loss_axis_that_keeps_the_others_readable():
    normal = fake_history('lr 0.02', 10, 0.2)
    diverging = [dict(e, run='lr 0.1', train_loss=2.3 * 1.5 ** e['round'], eval_loss=2.5 * 1.5 ** e['round'])
                 for e in normal]
    loss, accuracy = plots.plot_convergence(normal + diverging).axes
    assert loss.get_yscale() == 'log' and 'log scale' in loss.get_ylabel()
    assert accuracy.get_yscale() == 'linear'
    assert plots.plot_convergence(normal).axes[0].get_yscale() == 'linear'
    assert plots.plot_convergence(normal, loss_scale='log').axes[0].get_yscale() == 'log'
    assert plots.plot_convergence(normal + diverging, loss_scale='linear').axes[0].get_yscale() == 'linear'
    with pytest.raises(ValueError, match="loss_scale must be 'linear', 'log' or 'auto'"):
        plots.plot_convergence(normal, loss_scale='logarithmic')
    save(plots.plot_convergence(normal + diverging), 'convergence_log')


def test_accuracy_ylim_shows_a_small_spread_at_its_true_size():
    ax = Figure().add_subplot()
    accuracies = [0.657, 0.675, 0.668, 0.661]
    ax.plot(range(4), accuracies)
    low, high = plots.accuracy_ylim(ax, accuracies)
    assert ax.get_ylim() == (low, high) and high - low == pytest.approx(0.2)
    assert low < min(accuracies) and max(accuracies) < high
    assert ax.texts[-1].get_text() == 'spread: max - min = 1.8 points'
    assert plots.accuracy_ylim(ax, [0.95, 0.99], annotate=False)[1] == 1.0  # kept inside [0, 1]
    assert plots.accuracy_ylim(ax, [0.2, 0.9]) == (0.2, 0.9)  # a wide spread is shown as it is
    assert plots.accuracy_ylim(ax, [0.6, 0.7], min_span=1) == (0.0, 1.0)  # bars start at 0
    with pytest.raises(ValueError, match='at least one finite accuracy'):
        plots.accuracy_ylim(ax, [float('nan')])


def test_federated_round_diagram_uses_the_tutorials_vocabulary():
    fig = plots.plot_federated_round(num_clients=4)
    text = ' '.join(t.get_text() for t in fig.axes[0].texts) + fig.axes[0].get_title()
    for words in ('@SERVER', '@CLIENTS', 'federated_broadcast', 'federated_mean', 'server update',
                  'local training', 'weighted mean', 'SERVER_STATE, FEDERATED_DATA -> SERVER_STATE, TRAINING_METRICS',
                  'client K', r'\eta_s'):
        assert words in text
    with pytest.raises(ValueError, match='between 2 and 5'):
        plots.plot_federated_round(num_clients=8)
    save(fig, 'federated_round')


def test_every_plot_displays_as_png_without_pyplot(train):
    """Under MPLBACKEND=Agg a returned figure shows in a notebook by its PNG repr, no plt.show() needed."""
    figures = [plots.plot_convergence(fake_history('a', 3, 0.3)), plots.plot_federated_round(),
               plots.plot_samples(train, 'writer_001', n=4), plots.plot_label_histogram(train, 'writer_001'),
               plots.plot_label_distribution(train, train.client_ids[:3]), plots.plot_label_heatmap(train),
               plots.plot_partition_comparison(np.repeat(np.arange(10), 4), {'IID': ft.partition_iid(40, 4)})]
    for fig in figures:
        assert isinstance(fig, plots.Figure) and fig._repr_png_().startswith(b'\x89PNG')
