"""Exploration helpers: sizes and label counts per client."""

import numpy as np
import pytest

from fedteach.data import ClientData, client_sizes, label_histogram, label_matrix, summarize


@pytest.fixture
def clients():
    return ClientData.from_arrays({
        'a': {'label': np.array([0, 0, 3], np.int32)},
        'b': {'label': np.array([9], np.int32)},
        'c': {'label': np.array([1, 1, 1, 1, 2], np.int32)},
    })


def test_client_sizes_for_all_or_chosen_clients(clients):
    assert client_sizes(clients) == {'a': 3, 'b': 1, 'c': 5}
    assert client_sizes(clients, ['c', 'a']) == {'c': 5, 'a': 3}


def test_label_histogram_counts_each_class(clients):
    assert label_histogram(clients, 'a').tolist() == [2, 0, 0, 1, 0, 0, 0, 0, 0, 0]


def test_label_matrix_has_one_row_per_client(clients):
    matrix = label_matrix(clients, ['b', 'c'])
    assert matrix.shape == (2, 10)
    assert matrix[0, 9] == 1 and matrix[1].tolist()[:3] == [0, 4, 1]
    assert label_matrix(clients).sum() == 9


def test_summarize_reports_counts_and_spread(clients):
    assert summarize(clients) == {'clients': 3, 'examples': 9, 'min': 1, 'median': 3.0, 'max': 5}


def test_labels_beyond_num_classes_are_explained(clients):
    with pytest.raises(ValueError, match=r"labels in \[9, 9\], outside \[0, 5\); pass num_classes=10"):
        label_histogram(clients, 'b', num_classes=5)
    with pytest.raises(ValueError, match="no field 'y'"):
        label_histogram(clients, 'b', label_key='y')
