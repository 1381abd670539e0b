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
    pools = []
    original = offline._sample_sources

    def recording(rng, wanted, labels, pool):
        sources = original(rng, wanted, labels, pool)
        pools.append(set(sources.tolist()))
        return sources

    monkeypatch.setattr(offline, '_sample_sources', recording)
    load_offline_digits(num_clients=20)
    train_sources, test_sources = pools
    assert train_sources.isdisjoint(test_sources)


def test_is_learnable_across_writers(digits):
    """A nearest-class-mean classifier fit on train recognizes held-out test images."""
    train, test = digits
    x, y = stacked(train, 'pixels').reshape(-1, 784), stacked(train, 'label')
    means = np.stack([x[y == k].mean(axis=0) for k in range(10)])
    x_test, y_test = stacked(test, 'pixels').reshape(-1, 784), stacked(test, 'label')
    predicted = ((x_test[:, None, :] - means[None]) ** 2).sum(-1).argmin(axis=1)
    assert (predicted == y_test).mean() > 0.6


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
