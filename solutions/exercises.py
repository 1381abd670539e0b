"""Solutions to the course's exercises, one function per exercise, in notebook order."""
import numpy as np
import tensorflow as tf

import fedteach as ft


# Notebook 1, exercise 1
def most_common_label(client_data, client_id):
    """The digit a writer wrote most often."""
    return int(np.bincount(client_data.client_arrays(client_id)["label"]).argmax())


# Notebooks 1 and 6, exercise "at most 2 digits per client" (without ft.partition_shards)
def two_labels_per_client(labels, num_clients):
    """Sort by label and cut into num_clients contiguous chunks.

    With about equally frequent labels and at least as many clients as labels, a chunk spans one or two
    labels. (ft.partition_shards shuffles shards between clients instead, so neighbours differ.)
    """
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, num_clients)
    return {f"client_{i:03d}": np.sort(shard) for i, shard in enumerate(shards)}


# Notebook 2, exercise 1
def input_spec():
    """The batch dimension is None: a client's last batch is smaller."""
    return {"x": tf.TensorSpec([None, 784], tf.float32), "y": tf.TensorSpec([None, 1], tf.int32)}


# Notebook 3, exercise 1 (the tutorial's exercise: random clients per round)
def clients_for_round(client_ids, round_num, num_clients=3, seed=0):
    """A uniform sample without replacement, reproducible from (seed, round_num)."""
    rng = np.random.default_rng([seed, round_num])
    return [client_ids[i] for i in rng.choice(len(client_ids), size=num_clients, replace=False)]


# Notebook 4, exercise 1
@ft.federated_computation
def aggregate_loss(metrics):
    return {
        "loss": ft.federated_mean(metrics.loss, metrics.num_examples),
        "num_examples": ft.federated_sum(metrics.num_examples),
    }


# Notebook 5, exercise 1
def generalization_gap(train_metrics, test_metrics):
    key = "accuracy" if "accuracy" in train_metrics else "sparse_categorical_accuracy"
    return float(train_metrics[key]) - float(test_metrics[key])
