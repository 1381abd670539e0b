"""Checks for the course's exercises.

Each check looks at a student's answer, returns whether it is right and, if
not, a hint that points in the right direction without giving the answer
away. The :class:`Feedback` it returns is truthy when correct and shows as
that message in a notebook; a check never raises,
so a notebook with unfinished exercises still runs top to bottom. Worked
solutions live apart from the notebooks, in ``solutions/``.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Feedback:
    """The verdict of a check: ``correct`` and a message for the student.

    Example:
        >>> bool(Feedback(True, 'well done'))
        True
    """

    correct: bool
    message: str

    def __bool__(self) -> bool:
        return self.correct

    def __str__(self) -> str:
        return ("Correct. " if self.correct else "Not yet. ") + self.message

    __repr__ = __str__


def _verdict(correct: bool, message: str) -> Feedback:
    return Feedback(correct, message)


def _attempt(fn, *args):
    try:
        return fn(*args), None
    except Exception as error:  # the student's code failing is feedback, not a crash
        return None, error


def check_most_common_label(fn, client_data) -> Feedback:
    """Checks ``fn(client_data, client_id) -> int``: the label a writer wrote most often.

    Example:
        >>> import numpy as np, fedteach as ft
        >>> cd = ft.ClientData.from_arrays({'a': {'label': np.array([1, 2, 2], np.int32)}})
        >>> bool(check_most_common_label(lambda c, i: 2, cd))
        True
    """
    for client_id in list(client_data.client_ids)[:5]:
        labels = client_data.client_arrays(client_id)["label"]
        counts = np.bincount(labels)
        answer, error = _attempt(fn, client_data, client_id)
        if error is not None:
            return _verdict(False, f"your function raised {type(error).__name__}: {error}")
        if answer is None or not np.isscalar(answer) and np.ndim(answer) != 0:
            return _verdict(False, f"for {client_id!r} it returned {answer!r}; return one label (an int).")
        in_range = 0 <= int(answer) < len(counts)
        if not in_range or counts[int(answer)] != counts.max():
            return _verdict(False, f"for {client_id!r} label {int(answer)} is not the most frequent one. "
                                   "Hint: count each label with np.bincount on client_arrays(...)['label'].")
    return _verdict(True, "You found every writer's favourite label.")


def check_partition(partition, labels, num_clients: int, max_labels_per_client: int,
                    quiet: bool = False) -> Feedback:
    """Checks a pathological non-IID partition: every example once, few labels per client.

    Example:
        >>> import numpy as np
        >>> labels = np.array([0, 0, 1, 1])
        >>> bool(check_partition({'a': np.array([0, 1]), 'b': np.array([2, 3])}, labels, 2, 1))
        True
    """
    if not hasattr(partition, "values") or len(partition) != num_clients:
        return _verdict(False, f"expected a dict with {num_clients} clients (client id -> indices), "
                               f"got {type(partition).__name__}"
                               + (f" with {len(partition)}" if hasattr(partition, '__len__') else ""))
    assigned = np.concatenate([np.asarray(v, int) for v in partition.values()]) if partition else np.array([])
    if len(assigned) != len(labels) or len(np.unique(assigned)) != len(labels):
        return _verdict(False, f"{len(np.unique(assigned))} distinct examples are assigned ({len(assigned)} "
                               f"assignments) but there are {len(labels)}: each example must go to exactly one "
                               "client.")
    worst = max(len(np.unique(labels[np.asarray(v, int)])) for v in partition.values())
    if worst > max_labels_per_client:
        return _verdict(False, f"one client holds {worst} different labels; at most {max_labels_per_client} "
                               "are allowed. Hint: sort the examples by label before cutting them into shards.")
    return _verdict(True, "Each client sees only a few labels: as non-IID as it gets.")


def check_input_spec(spec, sample_batch) -> Feedback:
    """Checks a hand-written ``input_spec`` against a batch of the federated data.

    Example:
        >>> import numpy as np, tensorflow as tf
        >>> batch = {'x': np.zeros((20, 784), np.float32), 'y': np.zeros((20, 1), np.int32)}
        >>> spec = {'x': tf.TensorSpec([None, 784], tf.float32), 'y': tf.TensorSpec([None, 1], tf.int32)}
        >>> bool(check_input_spec(spec, batch))
        True
    """
    import tensorflow as tf

    if not hasattr(spec, "keys") or set(spec) != set(sample_batch):
        return _verdict(False, f"the spec should have the batch's keys {sorted(sample_batch)}.")
    for key, value in sample_batch.items():
        s = spec[key]
        if not isinstance(s, tf.TensorSpec):
            return _verdict(False, f"spec[{key!r}] should be a tf.TensorSpec, got {type(s).__name__}.")
        if s.dtype != tf.as_dtype(np.asarray(value).dtype):
            return _verdict(False, f"spec[{key!r}] has dtype {s.dtype.name}; look at the batch's dtype.")
        if s.shape.rank != np.ndim(value) or s.shape[0] is not None:
            return _verdict(False, f"spec[{key!r}] has shape {s.shape}. Its rank must match the batch, and the "
                                   "first (batch) dimension must be None: the last batch of a client is smaller.")
        if not s.shape.is_compatible_with(np.shape(value)):
            return _verdict(False, f"spec[{key!r}] {s.shape} does not fit a batch of shape {np.shape(value)}.")
    return _verdict(True, "Your input_spec describes the batches exactly.")


def check_client_sampling(fn, client_ids, clients_per_round: int) -> Feedback:
    """Checks ``fn(round_num) -> list of client ids`` samples clients the way the tutorial suggests.

    Right means: the requested number of distinct, existing clients; different
    clients in different rounds; the same clients when a round is repeated
    (reproducible, so a restored run picks the same clients).

    Example:
        >>> import fedteach as ft
        >>> ids = [f'w{i}' for i in range(20)]
        >>> bool(check_client_sampling(lambda r: ft.sample_clients(ids, 3, r), ids, 3))
        True
    """
    known = set(client_ids)
    rounds = {}
    for r in range(1, 6):
        answer, error = _attempt(fn, r)
        if error is not None:
            return _verdict(False, f"your function raised {type(error).__name__}: {error}")
        answer = list(answer) if answer is not None else []
        if len(answer) != clients_per_round or len(set(answer)) != len(answer):
            return _verdict(False, f"round {r} gave {len(answer)} clients ({len(set(answer))} distinct); "
                                   f"expected {clients_per_round} distinct clients.")
        if not set(answer) <= known:
            return _verdict(False, f"round {r} returned ids that are not clients: {sorted(set(answer) - known)[:3]}")
        rounds[r] = answer
    if len({tuple(sorted(a)) for a in rounds.values()}) == 1:
        return _verdict(False, "every round uses the same clients: that is the tutorial's shortcut, not random "
                               "sampling.")
    again, _ = _attempt(fn, 3)
    if list(again or []) != rounds[3]:
        return _verdict(False, "asking again for round 3 gave other clients. Hint: derive the random generator "
                               "from (seed, round_num), e.g. np.random.default_rng([seed, round_num]).")
    return _verdict(True, "New clients every round, reproducible from the round number.")


def check_metric_aggregation(computation) -> Feedback:
    """Checks a federated computation that aggregates ``{loss, num_examples}`` from clients.

    The right answer sums ``num_examples`` and averages ``loss`` weighted by
    each client's ``num_examples``, both placed at the server.

    Example:
        >>> import fedteach as ft
        >>> @ft.federated_computation
        ... def agg(m):
        ...     return {'loss': ft.federated_mean(m.loss, m.num_examples), 'num_examples': ft.federated_sum(m.num_examples)}
        >>> bool(check_metric_aggregation(agg))
        True
    """
    clients = [{"loss": 1.0, "num_examples": 10.0}, {"loss": 4.0, "num_examples": 30.0}]
    result, error = _attempt(computation, clients)
    if error is not None:
        return _verdict(False, f"calling it on two clients raised {type(error).__name__}: {error}")
    if not hasattr(result, "keys") or set(result) != {"loss", "num_examples"}:
        return _verdict(False, f"it should return a dict with 'loss' and 'num_examples', got {result!r}.")
    if abs(float(result["num_examples"]) - 40.0) > 1e-6:
        return _verdict(False, "num_examples should be the total over clients: which intrinsic adds up?")
    if abs(float(result["loss"]) - 2.5) < 1e-5:
        return _verdict(False, "loss is the plain average of the clients' losses; a client with more examples "
                               "should count more.")
    if abs(float(result["loss"]) - 3.25) > 1e-5:
        return _verdict(False, f"loss came out as {float(result['loss']):.4g}; weight each client's loss by its "
                               "number of examples.")
    signature = str(computation.type_signature)
    if "@SERVER" not in signature.split("->")[-1]:
        return _verdict(False, f"the result should be placed at the server; the signature is {signature}.")
    return _verdict(True, f"Signature {signature}.")


def check_generalization_gap(gap, train_metrics, test_metrics) -> Feedback:
    """Checks the gap between training-client and test-client accuracy (train minus test).

    Example:
        >>> bool(check_generalization_gap(0.25, {'accuracy': 0.75}, {'accuracy': 0.5}))
        True
    """
    key = "accuracy" if "accuracy" in train_metrics else "sparse_categorical_accuracy"
    expected = float(train_metrics[key]) - float(test_metrics[key])
    if gap is None:
        return _verdict(False, "set `gap` to a number.")
    if abs(float(gap) + expected) < 1e-6 and expected != 0:
        return _verdict(False, "the sign is flipped: subtract the test accuracy from the train accuracy.")
    if abs(float(gap) - expected) > 1e-6:
        return _verdict(False, f"{float(gap):.4g} is not the difference of the two accuracies.")
    return _verdict(True, f"The model is {expected:+.1%} better on the clients it trained on.")
