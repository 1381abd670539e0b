"""Plausible wrong answers to notebook 6's auto-graded exercises; each must score 0."""

WRONG = {
    "q1": [
        # Sort by label and cut into 10 equal chunks (the old published solution): a chunk can span 1 or 3 digits.
        """def two_digit_partition(labels):
    order = np.argsort(labels, kind='stable')
    return {f'client_{k:03d}': np.sort(chunk) for k, chunk in enumerate(np.array_split(order, 10))}

my_partition = two_digit_partition(pooled['label'])
""",
        # McMahan et al.'s shards: two random shards per client hold one to four digits.
        """def two_digit_partition(labels):
    return ft.partition_shards(labels, num_clients=10, shards_per_client=2, seed=0)

my_partition = two_digit_partition(pooled['label'])
""",
        # Strong Dirichlet skew is not a bound on the number of digits.
        """def two_digit_partition(labels):
    return ft.partition_dirichlet(labels, num_clients=10, alpha=0.1, seed=0)

my_partition = two_digit_partition(pooled['label'])
""",
        # Client k takes every example of digits k and k+1: each example is given to two clients.
        """def two_digit_partition(labels):
    return {f'client_{k:03d}': np.flatnonzero((labels == k) | (labels == (k + 1) % 10)) for k in range(10)}

my_partition = two_digit_partition(pooled['label'])
""",
        # One digit per client: every example exactly once, but one digit, not two.
        """def two_digit_partition(labels):
    return {f'client_{k:03d}': np.flatnonzero(labels == k) for k in range(10)}

my_partition = two_digit_partition(pooled['label'])
""",
        # Two digits per client, but only their first 50 examples: the other examples belong to no client.
        """def two_digit_partition(labels):
    partition = {}
    for k in range(10):
        first, second = np.array_split(np.flatnonzero(labels == k), 2)
        partition.setdefault(f'client_{k:03d}', []).append(first[:25])
        partition.setdefault(f'client_{(k + 1) % 10:03d}', []).append(second[:25])
    return {client: np.concatenate(parts) for client, parts in partition.items()}

my_partition = two_digit_partition(pooled['label'])
""",
        # The starter left as it was: an IID partition, every digit on every client.
        """def two_digit_partition(labels):
    return ft.partition_iid(len(labels), num_clients=10, seed=0)

my_partition = two_digit_partition(pooled['label'])
""",
        # Partitions this notebook's pooled['label'], whatever labels it is given.
        """# Hard-codes the visible case: only the hidden tests catch it.
def two_digit_partition(labels):
    visible = pooled['label']
    partition = {f'client_{k:03d}': [] for k in range(10)}
    for digit in range(10):
        first_half, second_half = np.array_split(np.flatnonzero(visible == digit), 2)
        partition[f'client_{digit:03d}'].append(first_half)
        partition[f'client_{(digit + 1) % 10:03d}'].append(second_half)
    return {client: np.sort(np.concatenate(parts)) for client, parts in partition.items()}

my_partition = two_digit_partition(pooled['label'])
""",
    ],
}
