"""Federated datasets for fedteach: `ClientData`, EMNIST, offline digits, partitioners.

Example:
    >>> from fedteach.data import load_offline_digits, summarize
    >>> train, test = load_offline_digits(num_clients=10)
    >>> summarize(train)['clients']
    10
"""

from fedteach.data.client_data import ClientData, UnknownClientError
from fedteach.data.course import load_course_data
from fedteach.data.download import DownloadError
from fedteach.data.emnist import load_emnist
from fedteach.data.explore import client_sizes, label_histogram, label_matrix, summarize
from fedteach.data.offline import load_offline_digits
from fedteach.data.partition import (
    partition_dirichlet,
    partition_iid,
    partition_shards,
    partition_sizes,
)
from fedteach.data.preprocess import make_federated_data, preprocess_for_tutorial
from fedteach.data.synthetic import make_emnist_like_clients, write_emnist_archive, write_emnist_h5

__all__ = [
    'ClientData',
    'UnknownClientError',
    'DownloadError',
    'load_emnist',
    'load_offline_digits',
    'load_course_data',
    'make_federated_data',
    'preprocess_for_tutorial',
    'partition_iid',
    'partition_dirichlet',
    'partition_shards',
    'partition_sizes',
    'client_sizes',
    'label_histogram',
    'label_matrix',
    'summarize',
    'write_emnist_h5',
    'make_emnist_like_clients',
    'write_emnist_archive',
]
