"""Plausible wrong answers to notebook 1's auto-graded exercises; each must score 0."""

WRONG = {
    "q1": [
        # The first label the writer wrote, not the most frequent one.
        """def most_common_label(client_data, client_id):
    labels = client_data.client_arrays(client_id)['label']
    return int(labels[0])
""",
        # How often the favourite digit occurs, not which digit it is.
        """def most_common_label(client_data, client_id):
    labels = client_data.client_arrays(client_id)['label']
    return int(np.bincount(labels).max())
""",
        # The position of the largest label in the list.
        """def most_common_label(client_data, client_id):
    labels = client_data.client_arrays(client_id)['label']
    return int(np.argmax(labels))
""",
        # The middle digit: right for some writers only.
        """def most_common_label(client_data, client_id):
    labels = client_data.client_arrays(client_id)['label']
    return int(np.median(labels))
""",
        # The first writer's favourite digit, written in: right for that writer only.
        """def most_common_label(client_data, client_id):
    return 6
""",
        # The right digit, but as a float: the exercise asks for an int.
        """def most_common_label(client_data, client_id):
    labels = client_data.client_arrays(client_id)['label']
    return float(np.bincount(labels).argmax())
""",
        """# Hard-codes the visible case: only the hidden tests catch it.
# A table of the answers for emnist_train's writers, computed once: it knows no other ClientData.
_FAVOURITE = {c: int(np.bincount(emnist_train.client_arrays(c)['label']).argmax()) for c in emnist_train.client_ids}

def most_common_label(client_data, client_id):
    return _FAVOURITE[client_id]
""",
    ],
    "q2": [
        # IID: every client holds every digit.
        """my_partition = ft.partition_iid(len(labels), num_clients=10, seed=0)
""",
        # Sort, cut into 20 equal shards, deal two at random: a shard that straddles two digits gives 3-4.
        """order = np.argsort(labels, kind='stable')
shards = np.array_split(order, 20)
pairs = np.random.default_rng(0).permutation(20).reshape(10, 2)
my_partition = {f'client_{k}': np.concatenate([shards[i] for i in pair]) for k, pair in enumerate(pairs)}
""",
        # Equal blocks of 900 sorted examples: the examples after the tenth block are lost.
        """order = np.argsort(labels, kind='stable')
my_partition = {f'client_{k}': order[900 * k:900 * (k + 1)] for k in range(10)}
""",
        # Two digits per client, but every digit goes to two clients whole: each example twice.
        """my_partition = {f'client_{d}': np.flatnonzero((labels == d) | (labels == (d + 1) % 10)) for d in range(10)}
""",
        # Ten clients, but with no examples at all.
        """my_partition = {f'client_{k}': [] for k in range(10)}
""",
    ],
}
