"""Plausible wrong answers to notebook 8's auto-graded questions; each must score 0 (see tools/course.py)."""

WRONG = {
    "q1": [
        # Only the long-lived processes: SuperLink and SuperNodes.
        "def processes_started(num_clients, num_rounds):\n"
        "    return 1 + num_clients",
        # One ClientApp per client, reused across rounds.
        "def processes_started(num_clients, num_rounds):\n"
        "    return 2 + 2 * num_clients",
        # Forgets the ServerApp.
        "def processes_started(num_clients, num_rounds):\n"
        "    return 1 + num_clients + num_clients * num_rounds",
        # Forgets the trainers next to the SuperNodes.
        "def processes_started(num_clients, num_rounds):\n"
        "    return 4 + 2 * num_clients + num_clients * num_rounds",
        # Counts only the processes that take part in learning: forgets the SuperExecs and `flwr run`.
        "def processes_started(num_clients, num_rounds):\n"
        "    return 2 + num_clients + num_clients * num_rounds",
        # Grows with the rounds only: the old public check accepted it.
        "def processes_started(num_clients, num_rounds):\n"
        "    return num_rounds",
        "# Hard-codes the visible case: only the hidden tests catch it.\n"
        "def processes_started(num_clients, num_rounds):\n"
        "    return {(1, 1): 8, (2, 5): 20, (3, 3): 22, (3, 4): 25, (4, 3): 28, (10, 2): 54}"
        ".get((num_clients, num_rounds), 0)",
    ],
    "q2": [
        # Counts one direction only.
        "def bytes_per_round(model, num_clients):\n"
        "    return 4 * model.count_params() * num_clients",
        # Counts numbers, not bytes.
        "def bytes_per_round(model, num_clients):\n"
        "    return 2 * model.count_params() * num_clients",
        # Eight bytes per number (float64).
        "def bytes_per_round(model, num_clients):\n"
        "    return 2 * 8 * model.count_params() * num_clients",
        # Only the kernel of the first layer (forgets the bias).
        "def bytes_per_round(model, num_clients):\n"
        "    return 2 * 4 * model.weights[0].numpy().size * num_clients",
        # Linear in the number of clients, but not the model's bytes: the old public check accepted it.
        "def bytes_per_round(model, num_clients):\n"
        "    return 1000 * num_clients",
        "# Hard-codes the visible case: only the hidden tests catch it.\n"
        "def bytes_per_round(model, num_clients):\n"
        "    return 2 * 4 * 7850 * num_clients",
    ],
}
