"""Plausible wrong answers to notebook 4's auto-graded exercises; each must score 0."""

WRONG = {
    "q1": [
        # An average of averages: every client's mean counts the same, whatever its size.
        """@ft.federated_computation
def aggregate_sums(metrics):
    divide = lambda total, count: total / count
    return {
        'loss': ft.federated_mean(ft.federated_map(divide, (metrics.loss_sum, metrics.num_examples))),
        'accuracy': ft.federated_mean(ft.federated_map(divide, (metrics.num_correct, metrics.num_examples))),
        'num_examples': ft.federated_sum(metrics.num_examples),
    }
""",
        # The worked example's operator applied to sums: weights the sums by the counts again.
        """@ft.federated_computation
def aggregate_sums(metrics):
    return {
        'loss': ft.federated_average(metrics.loss_sum, metrics.num_examples),
        'accuracy': ft.federated_average(metrics.num_correct, metrics.num_examples),
        'num_examples': ft.federated_sum(metrics.num_examples),
    }
""",
        # The sums are summed but never divided by the number of examples.
        """@ft.federated_computation
def aggregate_sums(metrics):
    return {
        'loss': ft.federated_sum(metrics.loss_sum),
        'accuracy': ft.federated_sum(metrics.num_correct),
        'num_examples': ft.federated_sum(metrics.num_examples),
    }
""",
        # Divides on each client and never aggregates: the results stay at CLIENTS.
        """@ft.federated_computation
def aggregate_sums(metrics):
    divide = lambda total, count: total / count
    return {
        'loss': ft.federated_map(divide, (metrics.loss_sum, metrics.num_examples)),
        'accuracy': ft.federated_map(divide, (metrics.num_correct, metrics.num_examples)),
        'num_examples': ft.federated_sum(metrics.num_examples),
    }
""",
        # Hard-codes the worked example's printed answers (2.5 and 0.6) instead of computing them.
        """@ft.federated_computation
def aggregate_sums(metrics):
    return {
        'loss': ft.federated_value(2.5, ft.SERVER),
        'accuracy': ft.federated_value(0.6, ft.SERVER),
        'num_examples': ft.federated_sum(metrics.num_examples),
    }
""",
    ],
}
