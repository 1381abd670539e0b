"""Personalization: how much does each client gain by fine-tuning the global model on its own data?

On non-IID data one global model fits no client perfectly. A cheap remedy is
to let every client take a few SGD steps from the global model on its own
training data before using it. :func:`evaluate_personalization` measures it:
for each client, the global model and the fine-tuned one are evaluated on
that client's *test* data, side by side.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from fedteach.evaluation import build_federated_evaluation
from fedteach.rounds.general import ClientRunner
from fedteach.rounds.process import check_model_fn
from fedteach.rounds.state import ServerState

__all__ = ["evaluate_personalization"]


def _tutorial_examples(dataset):
    """EMNIST-style examples (``pixels``, ``label``) as the tutorial's ``{'x': float32[784], 'y': int32[1]}``."""
    return dataset.map(lambda e: {"x": tf.reshape(e["pixels"], [-1]), "y": tf.reshape(e["label"], [1])})


def evaluate_personalization(model_fn, model_weights, train, test, client_ids=None, *, steps: int = 5,
                             learning_rate: float = 0.02, batch_size: int = 20, preprocess=None,
                             seed: int = 0) -> dict:
    """Evaluates the global model and its per-client fine-tuned versions on each client's test data.

    Args:
        model_fn: builds the :class:`fedteach.Model` (as for training).
        model_weights: the global model, ``state.model`` (or a ``ServerState``).
        train: ``ClientData`` whose data each client fine-tunes on.
        test: ``ClientData`` with the same client ids, for evaluation.
        client_ids: clients to evaluate; default: those of ``test`` that ``train`` has too.
        steps: SGD steps of fine-tuning (batches; the client's data repeats if it is short).
        learning_rate: fine-tuning SGD learning rate.
        batch_size: fine-tuning batch size.
        preprocess: turns a raw client dataset into *unbatched* examples in
            the model's format; default: the tutorial's ``pixels``/``label``
            to ``x``/``y`` mapping (identity when there is no ``pixels``).
        seed: shuffling seed of the fine-tuning data.

    Returns:
        ``{'clients': {id: row}, 'average': row}`` where a row has
        ``global_loss``, ``global_accuracy``, ``personalized_loss``,
        ``personalized_accuracy`` and ``num_test_examples``; the average is
        over clients (each client counts once, as each is one user).

    Example:
        >>> import fedteach as ft, keras
        >>> train, test = ft.load_offline_digits(num_clients=3, seed=0)
        >>> def model_fn():
        ...     net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation='softmax',
        ...                                                             kernel_initializer='zeros')])
        ...     net.compile(loss='sparse_categorical_crossentropy', optimizer=keras.optimizers.SGD(0.02),
        ...                 metrics=['accuracy'])
        ...     return ft.from_compiled_keras_model(net, {'x': tf.zeros([1, 784]), 'y': tf.zeros([1, 1], tf.int32)})
        >>> weights = ft.build_federated_averaging_process(model_fn).initialize().model
        >>> result = evaluate_personalization(model_fn, weights, train, test, steps=3, learning_rate=0.1)
        >>> len(result['clients']), round(result['average']['global_loss'], 4)
        (3, 2.3026)
        >>> sorted(result['average'])  # doctest: +NORMALIZE_WHITESPACE
        ['global_accuracy', 'global_loss', 'num_test_examples', 'personalized_accuracy',
         'personalized_loss']
    """
    weights = model_weights.model if isinstance(model_weights, ServerState) else model_weights
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0 (e.g. 5), got {steps!r}.")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0 (e.g. 0.02), got {learning_rate!r}.")
    if client_ids is None:
        known = set(train.client_ids)
        client_ids = [c for c in test.client_ids if c in known]
    client_ids = list(client_ids)
    if not client_ids:
        raise ValueError("no clients to evaluate: pass client_ids, or train and test data with common client ids.")
    if preprocess is None:
        preprocess = _tutorial_examples if "pixels" in train.element_spec else (lambda ds: ds)

    evaluation = build_federated_evaluation(model_fn)
    runner = ClientRunner(check_model_fn(model_fn), keras.optimizers.SGD(learning_rate))
    rows = {}
    for i, client in enumerate(client_ids):
        test_data = [preprocess(test.create_tf_dataset_for_client(client)).batch(max(batch_size, 100))]
        fine_tune = (preprocess(train.create_tf_dataset_for_client(client)).repeat()
                     .shuffle(1000, seed=int(seed) * 100_003 + i).batch(batch_size).take(int(steps)))
        tuned = runner.train(weights, fine_tune)[0] if steps else weights
        before, after = evaluation(weights, test_data), evaluation(tuned, test_data)
        accuracy = next((k for k in before if "accuracy" in k), None)
        rows[client] = {
            "global_loss": float(before["loss"]),
            "personalized_loss": float(after["loss"]),
            "global_accuracy": float(before[accuracy]) if accuracy else float("nan"),
            "personalized_accuracy": float(after[accuracy]) if accuracy else float("nan"),
            "num_test_examples": int(before["num_examples"]),
        }
    keys = ("global_loss", "personalized_loss", "global_accuracy", "personalized_accuracy", "num_test_examples")
    average = {k: float(np.mean([row[k] for row in rows.values()])) for k in keys}
    return {"clients": rows, "average": average}
