"""Plausible wrong answers to notebook 3's auto-graded exercises; each must score 0."""

WRONG = {
    "q1": [
        # Alternates between two overlapping slices: only two different sets of writers.
        """def clients_for_round(round_num):
    ids = emnist_train.client_ids
    return ids[round_num % 2:round_num % 2 + 3]
""",
        # New random writers only every fifth round: the same clients until round 5.
        """def clients_for_round(round_num):
    rng = np.random.default_rng(round_num // 5)
    return list(rng.choice(emnist_train.client_ids, size=3, replace=False))
""",
        # Random, but not reproducible: a repeated round draws other writers.
        """def clients_for_round(round_num):
    return list(np.random.choice(emnist_train.client_ids, size=3, replace=False))
""",
        # One generator for every round: the same writers in every round.
        """def clients_for_round(round_num):
    rng = np.random.default_rng(0)
    return list(rng.choice(emnist_train.client_ids, size=3, replace=False))
""",
        # Walks through client_ids three at a time: new writers, but not at random.
        """def clients_for_round(round_num):
    ids = list(emnist_train.client_ids)
    start = (3 * round_num) % (len(ids) - 2)
    return ids[start:start + 3]
""",
        # Random, but only among the first ten writers.
        """def clients_for_round(round_num):
    rng = np.random.default_rng([2026, round_num])
    return list(rng.choice(emnist_train.client_ids[:10], size=3, replace=False))
""",
        # The first three writers in every round.
        """def clients_for_round(round_num):
    return emnist_train.client_ids[:3]
""",
        """# Hard-codes the visible case: only the hidden tests catch it.
# A schedule drawn at random for rounds 1-10 only: any later round has no writers.
_SCHEDULE = {r: [str(c) for c in np.random.default_rng([2026, r]).choice(emnist_train.client_ids, size=3, replace=False)]
             for r in range(1, 11)}

def clients_for_round(round_num):
    return _SCHEDULE[round_num]
""",
    ],
    "q2": [
        # The tutorial's fixed writers in every round.
        """sampled_clients, sampled_losses = [], []
sampled_state = iterative_process.initialize()
for round_num in range(1, 11):
    sampled_state, sampled_metrics = iterative_process.next(sampled_state, federated_train_data)
    sampled_clients.append(list(sample_clients))
    sampled_losses.append(float(sampled_metrics['loss']))
""",
        # Continues from the model already trained above instead of a fresh state.
        """sampled_clients, sampled_losses = [], []
rng = np.random.default_rng(3)
sampled_state = state
for round_num in range(1, 11):
    round_clients = list(rng.choice(emnist_train.client_ids, size=3, replace=False))
    sampled_state, sampled_metrics = iterative_process.next(sampled_state, make_federated_data(emnist_train, round_clients))
    sampled_clients.append(round_clients)
    sampled_losses.append(float(sampled_metrics['loss']))
""",
        # Off by one: nine rounds.
        """sampled_clients, sampled_losses = [], []
rng = np.random.default_rng(3)
sampled_state = iterative_process.initialize()
for round_num in range(1, 10):
    round_clients = list(rng.choice(emnist_train.client_ids, size=3, replace=False))
    sampled_state, sampled_metrics = iterative_process.next(sampled_state, make_federated_data(emnist_train, round_clients))
    sampled_clients.append(round_clients)
    sampled_losses.append(float(sampled_metrics['loss']))
""",
        # Draws the writers but trains on the fixed ones.
        """sampled_clients, sampled_losses = [], []
rng = np.random.default_rng(3)
sampled_state = iterative_process.initialize()
for round_num in range(1, 11):
    round_clients = list(rng.choice(emnist_train.client_ids, size=3, replace=False))
    sampled_state, sampled_metrics = iterative_process.next(sampled_state, federated_train_data)
    sampled_clients.append(round_clients)
    sampled_losses.append(float(sampled_metrics['loss']))
""",
        # Random writers, but no training: made-up losses.
        """sampled_clients, sampled_losses = [], []
rng = np.random.default_rng(3)
for round_num in range(1, 11):
    sampled_clients.append(list(rng.choice(emnist_train.client_ids, size=3, replace=False)))
    sampled_losses.append(0.0)
""",
    ],
}
