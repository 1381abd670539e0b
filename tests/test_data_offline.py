"""load_offline_digits: real handwritten digits dealt to simulated writers, offline."""


import numpy as np
import pytest
import tensorflow as tf

from fedteach.data import label_matrix, load_offline_digits
from fedteach.data import offline


@pytest.fixture(scope='module')
def digits():
    return load_offline_digits()


def stacked(client_data, field):
    return np.concatenate([client_data.client_arrays(c)[field] for c in client_data.client_ids])


def test_has_emnist_structure_and_polarity(digits):
    train, test = digits
    assert train.element_spec == {
        'label': tf.TensorSpec([], tf.int32),
        'pixels': tf.TensorSpec([28, 28], tf.float32),
    }
    pixels = stacked(train, 'pixels')
    assert pixels.min() == 0.0 and pixels.max() == 1.0
    corners = pixels[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 1.0).mean() > 0.99  # Background is exactly 1.0, as in EMNIST.
    assert np.median(pixels) == 1.0  # Mostly background.
    assert set(np.unique(stacked(test, 'label'))) == set(range(10))


def test_defaults_give_200_writers_of_varying_sizes_in_train_and_test(digits):
    train, test = digits
    assert len(train) == 200 and train.client_ids[:2] == ['writer_000', 'writer_001']
    assert test.client_ids == train.client_ids
    train_sizes = np.array([train.num_examples(c) for c in train.client_ids])
    test_sizes = np.array([test.num_examples(c) for c in test.client_ids])
    assert 80 <= train_sizes.mean() <= 100 and train_sizes.std() > 20
    assert 8 <= test_sizes.mean() <= 12 and test_sizes.min() >= 1


def test_same_seed_gives_identical_arrays_and_another_seed_differs(digits):
    train, _ = digits
    again, _ = load_offline_digits(seed=0)
    other, _ = load_offline_digits(seed=1)
    for field in ('label', 'pixels'):
        np.testing.assert_array_equal(stacked(again, field), stacked(train, field))
    assert not np.array_equal(stacked(other, 'label'), stacked(train, 'label'))


def test_small_alpha_skews_writers_labels_more_than_large_alpha():
    def top_label_share(alpha):
        counts = label_matrix(load_offline_digits(50, alpha=alpha)[0])
        return (counts.max(axis=1) / counts.sum(axis=1)).mean()

    assert top_label_share(0.1) > 0.6 > 0.25 > top_label_share(100.0)


def test_test_examples_come_from_source_images_unseen_in_train(monkeypatch):
    drawn = {}  # pool -> the sources drawn from it (redrawn examples draw from their pool again)
    original = offline._sample_sources

    def recording(rng, wanted, labels, pool):
        sources = original(rng, wanted, labels, pool)
        drawn.setdefault(pool.tobytes(), set()).update(sources.tolist())
        return sources

    monkeypatch.setattr(offline, '_sample_sources', recording)
    load_offline_digits(num_clients=20)
    train_sources, test_sources = drawn.values()
    assert train_sources.isdisjoint(test_sources)


def test_is_learnable_across_writers(digits):
    """The nearest train image (1-NN on pixels) names the digit of held-out test images (about 96%)."""
    train, test = digits
    x, y = stacked(train, 'pixels').reshape(-1, 784), stacked(train, 'label')
    x_test, y_test = stacked(test, 'pixels').reshape(-1, 784), stacked(test, 'label')
    distances = (x_test**2).sum(axis=1)[:, None] - 2 * x_test @ x.T + (x**2).sum(axis=1)[None]
    assert (y[distances.argmin(axis=1)] == y_test).mean() > 0.9


def test_each_writer_has_a_consistent_style():
    """Writers differ more from each other than a writer's examples of one digit among themselves."""
    train, _ = load_offline_digits(40, alpha=100.0, examples_per_client=200)
    ones = {c: train.client_arrays(c)['pixels'][train.client_arrays(c)['label'] == 1] for c in train.client_ids}
    means = np.stack([v.mean(axis=0) for v in ones.values()])
    within = np.mean([((v - v.mean(axis=0)) ** 2).sum(axis=(1, 2)).mean() for v in ones.values()])
    between = ((means - means.mean(axis=0)) ** 2).sum(axis=(1, 2)).mean()
    assert between > 0.5 * within


def test_rejects_impossible_settings():
    with pytest.raises(ValueError, match='alpha > 0'):
        load_offline_digits(alpha=0)


def test_every_sample_of_every_writer_is_a_readable_digit(digits):
    """No blob, no faint scrap, no digit cut off by the frame, in train or test (issue 16)."""
    for client_data in digits:
        pixels = stacked(client_data, 'pixels')
        ink = pixels <= 0.5
        share = ink.mean(axis=(1, 2))
        assert share.min() >= 0.04 and share.max() <= 0.30
        # A blob is a solid patch of ink: no 7x7 window may be all ink (strokes are at most ~6 px wide).
        sums = np.pad(ink.cumsum(axis=1).cumsum(axis=2), ((0, 0), (1, 0), (1, 0)))
        windows = sums[:, 7:, 7:] - sums[:, :-7, 7:] - sums[:, 7:, :-7] + sums[:, :-7, :-7]
        assert windows.max() < 49
        edge = np.ones((28, 28), bool)
        edge[1:-1, 1:-1] = False
        assert not ink[:, edge].any()  # Nothing touches the frame.
        rows, cols = np.mgrid[0:28, 0:28]
        weight = ink.sum(axis=(1, 2))
        centre = np.stack([(ink * rows).sum(axis=(1, 2)) / weight, (ink * cols).sum(axis=(1, 2)) / weight])
        assert np.abs(centre - 13.5).max() < 7  # The ink is centred within the middle half.


def test_sources_with_a_solid_patch_are_left_out(monkeypatch):
    """The UCI images whose scaled-up ink has a solid patch (mostly thick 1s) give no examples."""
    ink, labels = offline._framed_digits()
    solid = ~offline._readable(ink, fraction=(0.0, 1.0))
    assert 50 < solid.sum() < 300 and (labels[solid] == 1).sum() > 30
    pools = []
    original = offline._sample_sources

    def recording(rng, wanted, labels, pool):
        pools.append(set(pool.tolist()))
        return original(rng, wanted, labels, pool)

    monkeypatch.setattr(offline, '_sample_sources', recording)
    load_offline_digits(num_clients=20)
    assert set().union(*pools).isdisjoint(np.flatnonzero(solid).tolist())
