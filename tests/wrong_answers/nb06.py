"""Plausible wrong answers to notebook 6's auto-graded exercises; each must score 0."""

WRONG = {
    "q1": [
        # Sort by label and cut into 10 equal chunks (the old published solution): a chunk can span 3 digits.
        """order = np.argsort(pooled['label'], kind='stable')
my_partition = {f'client_{k:03d}': np.sort(chunk) for k, chunk in enumerate(np.array_split(order, 10))}
""",
        # McMahan et al.'s shards: two random shards per client, often 3 digits.
        """my_partition = ft.partition_shards(pooled['label'], num_clients=10, shards_per_client=2, seed=0)
""",
        # Strong Dirichlet skew is not a bound on the number of digits.
        """my_partition = ft.partition_dirichlet(pooled['label'], num_clients=10, alpha=0.1, seed=0)
""",
        # Client k takes every example of digits k and k+1: each example is given to two clients.
        """labels = pooled['label']
my_partition = {f'client_{k:03d}': np.flatnonzero((labels == k) | (labels == (k + 1) % 10)) for k in range(10)}
""",
        # One digit per client, but only its first 50 examples: the other examples belong to no client.
        """labels = pooled['label']
my_partition = {f'client_{k:03d}': np.flatnonzero(labels == k)[:50] for k in range(10)}
""",
    ],
}
