"""Plausible wrong answers to notebook 9's auto-graded questions; each must score 0 (see tools/course.py)."""

WRONG = {
    "q1": [
        # Sorts each client's row instead of each number's column (np.sort's default axis is the last one).
        "def coordinate_trimmed_mean(updates, beta):\n"
        "    updates = np.asarray(updates, dtype=float)\n"
        "    n = len(updates)\n"
        "    b = int(np.floor(beta * n))\n"
        "    return np.sort(updates)[b:n - b].mean(axis=0)",
        # Trims only the largest values.
        "def coordinate_trimmed_mean(updates, beta):\n"
        "    updates = np.asarray(updates, dtype=float)\n"
        "    n = len(updates)\n"
        "    b = int(np.floor(beta * n))\n"
        "    return np.sort(updates, axis=0)[:n - b].mean(axis=0)",
        # Rounds b up: drops too much when beta * n is not a whole number.
        "import math\n"
        "def coordinate_trimmed_mean(updates, beta):\n"
        "    updates = np.asarray(updates, dtype=float)\n"
        "    n = len(updates)\n"
        "    b = math.ceil(beta * n)\n"
        "    return np.sort(updates, axis=0)[b:n - b].mean(axis=0)",
        # Drops whole clients, the ones with the largest norms, instead of values per number.
        "def coordinate_trimmed_mean(updates, beta):\n"
        "    updates = np.asarray(updates, dtype=float)\n"
        "    n = len(updates)\n"
        "    b = int(np.floor(beta * n))\n"
        "    keep = np.argsort(np.linalg.norm(updates, axis=1))[:n - 2 * b]\n"
        "    return updates[keep].mean(axis=0)",
        # The coordinate-wise median: ignores beta (right only when b = floor(beta * n) keeps the middle values).
        "def coordinate_trimmed_mean(updates, beta):\n"
        "    return np.median(np.asarray(updates, dtype=float), axis=0)",
        # Ignores beta: always drops one value from each end.
        "def coordinate_trimmed_mean(updates, beta):\n"
        "    updates = np.asarray(updates, dtype=float)\n"
        "    return np.sort(updates, axis=0)[1:len(updates) - 1].mean(axis=0)",
    ],
    "q2": [
        # Counts the client itself (distance 0) among its neighbours.
        "def krum_choice(updates, f):\n"
        "    updates = np.asarray(updates, dtype=float)\n"
        "    n = len(updates)\n"
        "    squared = ((updates[:, None, :] - updates[None, :, :]) ** 2).sum(axis=2)\n"
        "    return int(np.argmin(np.sort(squared, axis=1)[:, :n - f - 2].sum(axis=1)))",
        # Distances, not squared distances.
        "def krum_choice(updates, f):\n"
        "    updates = np.asarray(updates, dtype=float)\n"
        "    n = len(updates)\n"
        "    distances = np.sqrt(((updates[:, None, :] - updates[None, :, :]) ** 2).sum(axis=2))\n"
        "    np.fill_diagonal(distances, np.inf)\n"
        "    return int(np.argmin(np.sort(distances, axis=1)[:, :n - f - 2].sum(axis=1)))",
        # The n - f closest neighbours instead of n - f - 2.
        "def krum_choice(updates, f):\n"
        "    updates = np.asarray(updates, dtype=float)\n"
        "    n = len(updates)\n"
        "    squared = ((updates[:, None, :] - updates[None, :, :]) ** 2).sum(axis=2)\n"
        "    np.fill_diagonal(squared, np.inf)\n"
        "    return int(np.argmin(np.sort(squared, axis=1)[:, :n - f - 1].sum(axis=1)))",
        # The update closest to the mean of all updates (which the attackers move).
        "def krum_choice(updates, f):\n"
        "    updates = np.asarray(updates, dtype=float)\n"
        "    return int(np.argmin(np.linalg.norm(updates - updates.mean(axis=0), axis=1)))",
        # The update closest to the coordinate-wise median.
        "def krum_choice(updates, f):\n"
        "    updates = np.asarray(updates, dtype=float)\n"
        "    return int(np.argmin(np.linalg.norm(updates - np.median(updates, axis=0), axis=1)))",
        # Right scores, but a tie goes to the last of the tied clients (<= instead of <).
        "def krum_choice(updates, f):\n"
        "    updates = np.asarray(updates, dtype=float)\n"
        "    n = len(updates)\n"
        "    squared = ((updates[:, None, :] - updates[None, :, :]) ** 2).sum(axis=2)\n"
        "    np.fill_diagonal(squared, np.inf)\n"
        "    scores = np.sort(squared, axis=1)[:, :n - f - 2].sum(axis=1)\n"
        "    best = 0\n"
        "    for k in range(n):\n"
        "        if scores[k] <= scores[best]:\n"
        "            best = k\n"
        "    return best",
    ],
    "q4": [
        # The model change the other way round.
        "def new_client_control(c_i, c, x, y_i, steps, learning_rate):\n"
        "    return c_i - c + (y_i - x) / (steps * learning_rate)",
        # Forgets to undo the correction c - c_i the steps used (right only while c_i = c).
        "def new_client_control(c_i, c, x, y_i, steps, learning_rate):\n"
        "    return (x - y_i) / (steps * learning_rate)",
        # The correction with the wrong sign.
        "def new_client_control(c_i, c, x, y_i, steps, learning_rate):\n"
        "    return c - c_i + (x - y_i) / (steps * learning_rate)",
        # Divides by the number of steps only, forgetting the learning rate.
        "def new_client_control(c_i, c, x, y_i, steps, learning_rate):\n"
        "    return c_i - c + (x - y_i) / steps",
    ],
}
