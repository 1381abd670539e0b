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
        # Yogi with another server learning rate: the old public check accepted any.
        "fedyogi = ft.build_federated_averaging_process(model_fn, "
        "server_optimizer_fn=lambda: optimizers.fed_yogi(0.1))",
        # Reddi et al.'s FedAdam (v starts at tau**2, no bias correction), not Yogi.
        "fedyogi = ft.build_federated_averaging_process(model_fn, "
        "server_optimizer_fn=lambda: optimizers.fed_adam(0.01, paper=True))",
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
        # Any small number: the old public check only asked for less than z * C.
        "def server_noise_std(noise_multiplier, clip_norm, clients_per_round):\n"
        "    return 0",
        "# Hard-codes the visible case: only the hidden tests catch it.\n"
        "def server_noise_std(noise_multiplier, clip_norm, clients_per_round):\n"
        "    return {(2.0, 1.0): 0.2, (1.0, 0.5): 0.05}.get((noise_multiplier, clip_norm), 0.1)",
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
        # A round number between float32's count and the bare bits: the old public check accepted it.
        "def upload_bytes(variable_sizes, bits):\n"
        "    return 10000",
        "# Hard-codes the visible case: only the hidden tests catch it.\n"
        "def upload_bytes(variable_sizes, bits):\n"
        "    return {1: 998, 2: 1979, 4: 3941, 8: 7866, 16: 15716}[bits]",
    ],
}
