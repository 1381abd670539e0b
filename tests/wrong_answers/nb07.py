"""Plausible wrong answers to notebook 7's auto-graded questions; each must score 0 (see tools/course.py)."""

WRONG = {
    "q2": [
        # FedAdam instead of FedYogi: the old check (5 optimizer arrays) accepted it.
        "fedyogi = ft.build_federated_averaging_process(model_fn, "
        "server_optimizer_fn=lambda: optimizers.fed_adam(0.01))",
        # Yogi with FedAvg's server learning rate.
        "fedyogi = ft.build_federated_averaging_process(model_fn, "
        "server_optimizer_fn=lambda: optimizers.fed_yogi(1.0))",
        # Yogi with Adam's bias correction: not Reddi et al.'s rule.
        "fedyogi = ft.build_federated_averaging_process(model_fn, "
        "server_optimizer_fn=lambda: optimizers.Yogi(0.01, bias_correction=True))",
        # Plain FedAvg.
        "fedyogi = ft.build_federated_averaging_process(model_fn)",
    ],
    "q3": [
        # The noise on the sum, not on the mean.
        "def server_noise_std(noise_multiplier, clip_norm, clients_per_round):\n"
        "    return noise_multiplier * clip_norm",
        # Forgets the clip norm (right only when C = 1).
        "def server_noise_std(noise_multiplier, clip_norm, clients_per_round):\n"
        "    return noise_multiplier / clients_per_round",
        # Divides by the square root of n, as for an average of independent noises.
        "import math\n"
        "def server_noise_std(noise_multiplier, clip_norm, clients_per_round):\n"
        "    return noise_multiplier * clip_norm / math.sqrt(clients_per_round)",
        # The literal of the notebook's setting.
        "def server_noise_std(noise_multiplier, clip_norm, clients_per_round):\n"
        "    return 0.2",
    ],
    "q5": [
        # Forgets the min and max each variable sends.
        "import math\n"
        "def upload_bytes(variable_sizes, bits):\n"
        "    return sum(math.ceil(size * bits / 8) for size in variable_sizes)",
        # Does not round partly filled bytes up.
        "def upload_bytes(variable_sizes, bits):\n"
        "    return sum(size * bits // 8 + 8 for size in variable_sizes)",
        # One min/max header for the whole model instead of one per variable.
        "import math\n"
        "def upload_bytes(variable_sizes, bits):\n"
        "    return math.ceil(sum(variable_sizes) * bits / 8) + 8",
        # The 4-bit answer for this model, hard-coded.
        "def upload_bytes(variable_sizes, bits):\n"
        "    return 3941",
    ],
}
