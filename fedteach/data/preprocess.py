"""The tutorial's preprocessing: per-client datasets ready for Keras."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

from fedteach.data.client_data import ClientData

DatasetFn = Callable[[tf.data.Dataset], tf.data.Dataset]


def preprocess_for_tutorial(
    num_epochs: int = 10,
    batch_size: int = 20,
    shuffle_buffer: int | None = 500,
    seed: int | None = None,
) -> DatasetFn:
    """The tutorial's `preprocess(dataset)` function, with its constants as arguments.

    The function repeats a client dataset `num_epochs` times, turns each
    EMNIST example into `{'x': float32[784], 'y': int32[1]}`, shuffles with a
    buffer of `shuffle_buffer` examples (0 or None: no shuffle) and batches.
    The settings are also attributes of the returned function (`num_epochs`,
    `batch_size`, `shuffle_buffer`, `seed`), so code that trains from raw
    arrays can reproduce them.

    Args:
        num_epochs: passes over each client's data.
        batch_size: examples per batch (the last batch may be smaller).
        shuffle_buffer: shuffle buffer size; 0 or None disables shuffling.
        seed: shuffle seed, for reproducible batches.

    Returns:
        `preprocess(dataset) -> dataset`.

    Example:
        >>> import numpy as np
        >>> cd = ClientData.from_arrays({'a': {
        ...     'label': np.arange(3, dtype=np.int32),
        ...     'pixels': np.ones((3, 28, 28), np.float32)}})
        >>> preprocess = preprocess_for_tutorial(num_epochs=2, batch_size=4, shuffle_buffer=0)
        >>> batch = next(iter(preprocess(cd.create_tf_dataset_for_client('a'))))
        >>> batch['x'].shape, batch['y'].numpy().ravel().tolist()
        (TensorShape([4, 784]), [0, 1, 2, 0])
    """
    for name, value, least in (('num_epochs', num_epochs, 1), ('batch_size', batch_size, 1),
                               ('shuffle_buffer', shuffle_buffer or 0, 0)):
        if value < least:
            raise ValueError(
                f'preprocess_for_tutorial needs {name} >= {least}, got {value}. '
                'The tutorial uses num_epochs=10, batch_size=20, shuffle_buffer=500 '
                '(shuffle_buffer=0 or None turns shuffling off).'
            )

    def element_fn(element):
        return {
            'x': tf.reshape(element['pixels'], [-1]),
            'y': tf.reshape(element['label'], [1]),
        }

    element_fn.label_field = 'label'  # lets fedteach check the labels against the model's classes

    def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
        dataset = dataset.repeat(num_epochs).map(element_fn)
        if shuffle_buffer:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed)
        return dataset.batch(batch_size)

    preprocess.num_epochs = num_epochs
    preprocess.batch_size = batch_size
    preprocess.shuffle_buffer = shuffle_buffer
    preprocess.seed = seed
    return preprocess


def make_federated_data(
    client_data: ClientData, client_ids: Sequence[str], preprocess_fn: DatasetFn | None = None
) -> list[tf.data.Dataset]:
    """One dataset per client id, as the tutorial's helper builds them.

    Args:
        client_data: the federated dataset.
        client_ids: the clients to take, e.g. `client_data.client_ids[:10]`.
        preprocess_fn: applied to each client dataset; None keeps them as
            `client_data` gives them (already preprocessed or not).

    Returns:
        A list of `tf.data.Dataset`, in the order of `client_ids`.

    Raises:
        UnknownClientError: an id that `client_data` does not contain.

    Example:
        >>> import numpy as np
        >>> cd = ClientData.from_arrays({'a': {'y': np.zeros(3)}, 'b': {'y': np.ones(5)}})
        >>> data = make_federated_data(cd, ['b', 'a'], lambda ds: ds.batch(2))
        >>> [len(list(ds)) for ds in data]
        [3, 2]
    """
    if isinstance(client_ids, str):
        raise TypeError(
            f'make_federated_data expects a list of client ids, got the string {client_ids!r}; '
            f'write [{client_ids!r}].'
        )
    datasets = [client_data.create_tf_dataset_for_client(c) for c in client_ids]
    return [preprocess_fn(d) for d in datasets] if preprocess_fn else datasets
