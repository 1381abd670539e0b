"""Plausible wrong answers to notebook 10's auto-graded questions; each must score 0 (see tools/course.py)."""

WRONG = {
    "q1": [
        # Forgets to divide: the image times the bias gradient, at the scale of -lr * dL/db.
        "def rebuild_input(kernel_update, bias_update):\n"
        "    j = int(np.argmax(np.abs(bias_update)))\n"
        "    return kernel_update[:, j]",
        # Undoes the learning rate's minus sign a second time: the negative image.
        "def rebuild_input(kernel_update, bias_update):\n"
        "    j = int(np.argmax(np.abs(bias_update)))\n"
        "    return -kernel_update[:, j] / bias_update[j]",
        # Always unit 0: right for the softmax model, a division by zero when that unit got no gradient.
        "def rebuild_input(kernel_update, bias_update):\n"
        "    return kernel_update[:, 0] / bias_update[0]",
        # The mean over units instead of one unit's ratio.
        "def rebuild_input(kernel_update, bias_update):\n"
        "    return kernel_update.mean(axis=1) / bias_update.mean()",
        # The largest bias change with its sign, not in absolute value: a blend when that unit's change is negative.
        "def rebuild_input(kernel_update, bias_update):\n"
        "    j = int(np.argmax(bias_update))\n"
        "    return kernel_update[:, j] / bias_update[j]",
        # The notebook's first digit: right only for the notebook's first client.
        "def rebuild_input(kernel_update, bias_update):\n"
        "    return images[0].ravel()",
        # The library's least squares over all ten units: exact for one example, a blend for a batch.
        "def rebuild_input(kernel_update, bias_update):\n"
        "    return leakage.reconstruct_from_update([kernel_update, bias_update]).ravel()",
    ],
    "q3": [
        # The signs the other way round: removes the masks the survivors did not add.
        "def remove_dropped_masks(total, dropped, survivors, pair_mask, m):\n"
        "    for d in dropped:\n"
        "        for v in survivors:\n"
        "            total = total + pair_mask(v, d) if d > v else total - pair_mask(v, d)\n"
        "    return total % m",
        # Forgets the modulus: the result leaves 0..m-1.
        "def remove_dropped_masks(total, dropped, survivors, pair_mask, m):\n"
        "    for d in dropped:\n"
        "        for v in survivors:\n"
        "            total = total - pair_mask(v, d) if d > v else total + pair_mask(v, d)\n"
        "    return total",
        # Subtracts every mask shared with the dropped client, whichever index is smaller.
        "def remove_dropped_masks(total, dropped, survivors, pair_mask, m):\n"
        "    for d in dropped:\n"
        "        for v in survivors:\n"
        "            total = total - pair_mask(v, d)\n"
        "    return total % m",
        # Leaves the masks in.
        "def remove_dropped_masks(total, dropped, survivors, pair_mask, m):\n"
        "    return total % m",
        # The notebook's own clients: the survivors' sum from the global x, whatever the arguments.
        "def remove_dropped_masks(total, dropped, survivors, pair_mask, m):\n"
        "    return x[survivors].sum(axis=0) % m",
    ],
}
