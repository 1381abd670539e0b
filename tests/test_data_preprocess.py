"""The tutorial's preprocessing and make_federated_data helper."""

import numpy as np
import pytest
import tensorflow as tf

from fedteach.data import (
    ClientData,
    UnknownClientError,
    make_emnist_like_clients,
    make_federated_data,
    preprocess_for_tutorial,
)


@pytest.fixture
def emnist_like():
    return ClientData.from_arrays(make_emnist_like_clients(3, [7, 4, 1], seed=0))


def test_tutorial_preprocess_flattens_renames_repeats_and_batches(emnist_like):
    preprocess = preprocess_for_tutorial(num_epochs=3, batch_size=5, seed=0)
    batches = list(preprocess(emnist_like.create_tf_dataset_for_client('f0000_00')))
    assert [len(b['y']) for b in batches] == [5, 5, 5, 5, 1]  # 3 epochs x 7 examples.
    assert batches[0]['x'].shape == (5, 784) and batches[0]['x'].dtype == tf.float32
    assert batches[0]['y'].shape == (5, 1) and batches[0]['y'].dtype == tf.int32
    labels = np.concatenate([b['y'].numpy().ravel() for b in batches])
    expected = emnist_like.client_arrays('f0000_00')['label']
    assert sorted(labels.tolist()) == sorted(expected.tolist() * 3)


def test_preprocess_spec_matches_the_tutorial(emnist_like):
    preprocess = preprocess_for_tutorial()
    processed = emnist_like.preprocess(preprocess)
    assert processed.preprocess_fn is preprocess  # The fast engine reads its settings.
    assert processed.element_spec == {
        'x': tf.TensorSpec([None, 784], tf.float32),
        'y': tf.TensorSpec([None, 1], tf.int32),
    }


def test_no_shuffle_keeps_order_and_a_seed_makes_shuffling_reproducible(emnist_like):
    dataset = emnist_like.create_tf_dataset_for_client('f0000_00')
    expected = emnist_like.client_arrays('f0000_00')['label'].tolist()

    def labels(preprocess):
        return [int(y) for b in preprocess(dataset) for y in b['y'].numpy().ravel()]

    for buffer in (0, None):
        assert labels(preprocess_for_tutorial(1, 3, shuffle_buffer=buffer)) == expected
    shuffled = preprocess_for_tutorial(4, 3, seed=7)
    assert labels(shuffled) == labels(preprocess_for_tutorial(4, 3, seed=7))


def test_settings_are_readable_from_the_function():
    preprocess = preprocess_for_tutorial(num_epochs=2, batch_size=8, shuffle_buffer=100, seed=1)
    assert (preprocess.num_epochs, preprocess.batch_size, preprocess.shuffle_buffer, preprocess.seed) == (2, 8, 100, 1)


def test_invalid_settings_are_explained():
    with pytest.raises(ValueError, match='batch_size >= 1'):
        preprocess_for_tutorial(batch_size=0)


def test_make_federated_data_keeps_client_order(emnist_like):
    data = make_federated_data(emnist_like, ['f0002_00', 'f0000_00'], preprocess_for_tutorial(1, 100))
    assert [int(next(iter(ds))['y'].shape[0]) for ds in data] == [1, 7]
    raw = make_federated_data(emnist_like, ['f0001_00'])
    assert raw[0].element_spec == emnist_like.element_spec


def test_make_federated_data_rejects_unknown_ids_and_a_bare_string(emnist_like):
    with pytest.raises(UnknownClientError, match="Did you mean 'f0001_00'"):
        make_federated_data(emnist_like, ['f0001_0'])
    with pytest.raises(TypeError, match=r"write \['f0000_00'\]"):
        make_federated_data(emnist_like, 'f0000_00')
