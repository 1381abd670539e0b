"""What an update reveals: the server rebuilds a client's digits from the update the client sends.

Two attacks by an honest-but-curious server, which knows the model it broadcast
and receives each client's update ``Δ = w_client - w_global``:

* **Exact inversion of a dense first layer.** For one example ``x`` and a first
  layer ``z = x W + b``, the chain rule gives ``∂L/∂W[i, j] = x[i] ∂L/∂b[j]``:
  every column of the kernel's gradient is ``x`` times one number of the
  bias's gradient. One step of local SGD on one example sends
  ``Δ = -lr ∇L``, so the same holds for the update, ``lr`` cancels, and
  ``x = ΔW Δb / (Δb · Δb)`` (:func:`invert_dense_gradient`) to float precision.
* **Gradient matching** (Zhu et al. 2019, "Deep Leakage from Gradients";
  labels inferred as in Zhao et al. 2020, iDLG): the server searches for
  dummy images whose gradient matches the one it received
  (:func:`match_gradients`, L-BFGS-B over pixels in [0, 1]).

What defends: differential privacy's noise (``ft.aggregators.dp_mean``)
drowns the update in the released model, and secure aggregation
(:mod:`fedteach.secure_aggregation`) shows the server only masked vectors
and the sum of many clients. The attacks use only what a fedteach round gives
the server: :func:`record_updates` is a pass-through stage for
``ft.aggregators.chain`` that keeps what the server received from each client.

Example:
    >>> import numpy as np
    >>> x, delta = np.array([0.0, 0.5, 1.0]), np.array([0.2, -0.1])   # an input and dL/db
    >>> invert_dense_gradient(np.outer(x, delta), delta).tolist()      # dL/dW = x (x) dL/db
    [0.0, 0.5, 1.0]
"""
from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np

from fedteach.aggregators import ClientTransform

__all__ = ["MatchResult", "client_gradient", "first_dense_layer", "infer_labels", "invert_dense_gradient",
           "match_gradients", "match_images", "model_change", "plot_reconstructions", "record_updates",
           "reconstruct_from_update"]


def _arrays(weights) -> list[np.ndarray]:
    """A list of arrays from a list, a dict of named arrays, ModelWeights or a ServerState."""
    weights = getattr(weights, "model", weights)
    weights = getattr(weights, "trainable", weights)
    if isinstance(weights, Mapping):
        weights = list(weights.values())
    return [np.asarray(w) for w in weights]


def record_updates(log: list) -> ClientTransform:
    """A stage for ``ft.aggregators.chain`` that keeps what the server receives from each client, unchanged.

    Every round appends ``{'round': r, 'updates': [client 0's arrays,
    client 1's arrays, ...]}`` to ``log`` (each client's update as a list of
    arrays, one per trainable variable, in the model's order). Put it first
    in the chain to see the updates as the clients sent them.

    Example:
        >>> from fedteach.aggregators import RoundContext, chain, weighted_mean
        >>> seen = []
        >>> _ = chain(record_updates(seen), weighted_mean()).aggregate(
        ...     [np.array([[1.0], [3.0]])], np.ones(2), RoundContext(1, 0))
        >>> seen[0]['round'], seen[0]['updates'][1]
        (1, [array([3.])])
    """
    def transform(updates, weights, context):
        updates = [np.asarray(u) for u in updates]
        log.append({"round": int(context.round_num),
                    "updates": [[np.copy(u[c]) for u in updates] for c in range(len(weights))]})
        return updates, weights, {}
    return ClientTransform(transform, (), "record updates")


def model_change(before, after) -> list[np.ndarray]:
    """``after - before`` for each trainable variable: what anyone who sees two successive global models learns.

    With one client in a round and the server's SGD at learning rate 1, it is
    that client's update (after the aggregator's processing, e.g. DP noise).

    Example:
        >>> model_change([np.zeros(2)], [np.array([0.5, -1.0])])
        [array([ 0.5, -1. ])]
    """
    return [a.astype(np.float64) - b.astype(np.float64) for b, a in zip(_arrays(before), _arrays(after))]


def first_dense_layer(gradient_or_update) -> tuple[np.ndarray, np.ndarray]:
    """The kernel ``[inputs, units]`` and bias ``[units]`` of the first dense layer, from a list or dict of arrays.

    Example:
        >>> kernel, bias = first_dense_layer({'dense/kernel': np.zeros((784, 10)), 'dense/bias': np.zeros(10)})
        >>> kernel.shape, bias.shape
        ((784, 10), (10,))
    """
    arrays = _arrays(gradient_or_update)
    if len(arrays) < 2 or arrays[0].ndim != 2 or arrays[1].shape != arrays[0].shape[1:]:
        raise ValueError(f"first_dense_layer expects a dense layer's kernel [inputs, units] and bias [units] first, "
                         f"got shapes {[a.shape for a in arrays[:2]]}: the attack needs a dense first layer "
                         "(flatten the input, as the course's linear model and MLP do).")
    return arrays[0], arrays[1]


def invert_dense_gradient(kernel_gradient, bias_gradient) -> np.ndarray:
    """The input of a dense layer from its gradients for one example: ``x = ∂L/∂W · ∂L/∂b / ‖∂L/∂b‖²``.

    ``∂L/∂W = x ⊗ ∂L/∂b``, so every unit ``j`` with ``∂L/∂b[j] != 0`` gives
    ``x = ∂L/∂W[:, j] / ∂L/∂b[j]``; the least-squares combination of all
    units uses them all. Works as well on an update ``-lr ∇L`` (the factor
    cancels). For a batch it returns the examples' mix weighted by their
    bias gradients, not one of them.

    Example:
        >>> x = np.array([0.25, 1.0])
        >>> invert_dense_gradient(np.outer(x, [0.0, -3.0, 1.0]), np.array([0.0, -3.0, 1.0])).tolist()
        [0.25, 1.0]
    """
    kernel = np.asarray(kernel_gradient, np.float64)
    bias = np.asarray(bias_gradient, np.float64)
    norm = float(bias @ bias)
    if norm == 0.0:
        raise ValueError("invert_dense_gradient: the bias gradient is 0 (no unit of the first layer got a gradient, "
                         "e.g. all ReLUs inactive or a perfectly fit example); x cannot be read from this gradient.")
    return kernel @ bias / norm


def reconstruct_from_update(update, image_shape=(28, 28)) -> np.ndarray:
    """The server's attack on one client's update of a model with a dense first layer: the input, as an image.

    Exact when the update is one SGD step on one example (batch size 1,
    one example, one epoch); the learning rate need not be known.

    Example:
        >>> x = np.linspace(0, 1, 784)
        >>> update = [-0.1 * np.outer(x, [0.3, -0.2]), -0.1 * np.array([0.3, -0.2])]  # -lr * gradient
        >>> float(np.abs(reconstruct_from_update(update) - x.reshape(28, 28)).max()) < 1e-12
        True
    """
    kernel, bias = first_dense_layer(update)
    return invert_dense_gradient(kernel, bias).reshape(image_shape)


def client_gradient(keras_model, images, labels, *, from_logits: bool = False) -> list[np.ndarray]:
    """The gradient a client computes: of the mean sparse categorical cross-entropy over a batch, per trainable variable.

    Example:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation='softmax')])
        >>> [g.shape for g in client_gradient(net, np.zeros((2, 784)), [3, 5])]
        [(784, 10), (10,)]
    """
    import tensorflow as tf

    x = tf.constant(np.asarray(images, np.float32).reshape(len(labels), -1))
    y = tf.constant(np.asarray(labels, np.int32).reshape(-1))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, keras_model(x), from_logits))
    return [g.numpy() for g in tape.gradient(loss, keras_model.trainable_variables)]


def infer_labels(gradient, batch_size: int) -> np.ndarray:
    """The batch's labels from the last layer's bias gradient (iDLG, for a batch of distinct labels).

    With softmax cross-entropy, ``∂L/∂b[c] = mean_i (p_ic - [y_i = c])`` is
    negative only for labels present in the batch (while the model is not yet
    confident): the ``batch_size`` most negative entries, in increasing order.

    Example:
        >>> infer_labels([np.zeros((4, 3)), np.array([0.2, -0.3, 0.1])], 1).tolist()
        [1]
    """
    bias = _arrays(gradient)[-1]
    if bias.ndim != 1 or batch_size > len(bias):
        raise ValueError(f"infer_labels needs the last layer's bias gradient (one number per class, at least "
                         f"{batch_size}) last in the gradient; got shape {bias.shape}.")
    return np.sort(np.argsort(bias, kind="stable")[:batch_size])


class MatchResult(NamedTuple):
    """What gradient matching found: images ``[batch, pixels]`` in [0, 1], their labels, and how well they matched.

    ``distance`` is ``Σ‖∇' - ∇‖² / Σ‖∇‖²`` at the end (0: a perfect match).

    Example:
        >>> MatchResult(np.zeros((1, 4)), np.zeros(1), 0.5, 10).distance
        0.5
    """

    images: np.ndarray
    labels: np.ndarray
    distance: float
    iterations: int


def match_gradients(keras_model, gradient, batch_size: int, labels=None, *, from_logits: bool = False,
                    max_iterations: int = 500, seed: int = 0) -> MatchResult:
    """Deep Leakage from Gradients (Zhu et al. 2019): dummy images whose gradient matches ``gradient``.

    Minimises ``Σ_v ‖∇_v L(x', y) - g_v‖² / Σ_v ‖g_v‖²`` over the dummy
    images ``x'`` (pixels in [0, 1], from a seeded uniform start) with
    L-BFGS-B; the gradient of that distance with respect to the pixels is a
    second derivative that TensorFlow computes. The labels ``y`` are given or
    inferred (:func:`infer_labels`, iDLG), so only the images are searched.

    Args:
        keras_model: the model with the weights the gradient was computed at
            (the server knows them: it broadcast them).
        gradient: the observed gradient, one array per trainable variable
            (from an update of one local step: ``-update / lr``).
        batch_size: how many examples produced the gradient.
        labels: their labels, or None to infer them.
        from_logits: whether the model outputs logits (else probabilities).
        max_iterations: L-BFGS-B iterations at most.
        seed: the dummy images' start.

    Example:
        >>> import keras
        >>> keras.utils.set_random_seed(0)
        >>> net = keras.Sequential([keras.Input((16,)), keras.layers.Dense(4, activation='softmax')])
        >>> x = np.random.default_rng(1).random((2, 16))
        >>> found = match_gradients(net, client_gradient(net, x, [0, 2]), 2, max_iterations=200)
        >>> found.labels.tolist(), bool(match_images(x, found.images)[1].max() < 1e-3)
        ([0, 2], True)
    """
    import tensorflow as tf
    from scipy import optimize

    target = [tf.constant(np.asarray(g, np.float32)) for g in _arrays(gradient)]
    labels = infer_labels(target, batch_size) if labels is None else np.asarray(labels).reshape(-1)
    if len(labels) != batch_size:
        raise ValueError(f"match_gradients: {len(labels)} labels for a batch of {batch_size}.")
    pixels = int(np.prod(keras_model.inputs[0].shape[1:]))
    y = tf.constant(labels.astype(np.int32))
    scale = tf.add_n([tf.reduce_sum(tf.square(g)) for g in target])
    variables = keras_model.trainable_variables

    @tf.function
    def distance_and_gradient(flat):
        with tf.GradientTape() as outer:
            outer.watch(flat)
            with tf.GradientTape() as inner:
                probs = keras_model(tf.reshape(flat, [batch_size, pixels]))
                loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, probs, from_logits))
            grads = inner.gradient(loss, variables)
            distance = tf.add_n([tf.reduce_sum(tf.square(g - t)) for g, t in zip(grads, target)]) / scale
        return distance, outer.gradient(distance, flat)

    def fun(flat):
        distance, grad = distance_and_gradient(tf.constant(flat, tf.float32))
        return float(distance), grad.numpy().astype(np.float64)

    start = np.random.default_rng(seed).random(batch_size * pixels)
    result = optimize.minimize(fun, start, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * start.size,
                               options={"maxiter": int(max_iterations), "ftol": 0.0, "gtol": 1e-12})
    return MatchResult(result.x.reshape(batch_size, pixels).astype(np.float32), labels, float(result.fun),
                       int(result.nit))


def match_images(originals, reconstructions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs each original with a reconstruction (best assignment by MSE); returns (order, MSE, max abs error).

    ``reconstructions[order[i]]`` is the one paired with ``originals[i]``;
    the errors are per original image.

    Example:
        >>> a = np.array([[0.0, 1.0], [1.0, 1.0]])
        >>> order, mse, worst = match_images(a, a[::-1] + 0.1)
        >>> order.tolist(), np.round(mse, 6).tolist(), np.round(worst, 6).tolist()
        ([1, 0], [0.01, 0.01], [0.1, 0.1])
    """
    from scipy import optimize

    a = np.asarray(originals, np.float64).reshape(len(originals), -1)
    b = np.asarray(reconstructions, np.float64).reshape(len(reconstructions), -1)
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).mean(axis=2)
    rows, order = optimize.linear_sum_assignment(cost)
    difference = a - b[order]
    return order, (difference ** 2).mean(axis=1), np.abs(difference).max(axis=1)


def plot_reconstructions(originals, reconstructions, *, labels=None, title: str | None = None, fig=None):
    """Originals (top row) over what the server rebuilt (bottom row, paired by :func:`match_images`), with errors.

    Rebuilt pixels are shown clipped to [0, 1]; the errors are those of the unclipped values.

    Example:
        >>> x = np.random.default_rng(0).random((2, 784))
        >>> fig = plot_reconstructions(x, x[::-1])
        >>> len(fig.axes), fig.axes[2].get_title()
        (4, 'MSE 0\\nmax err 0')
    """
    from fedteach.plots import Figure

    originals = np.asarray(originals, np.float64).reshape(len(originals), 28, 28)
    order, mse, worst = match_images(originals, reconstructions)
    rebuilt = np.asarray(reconstructions, np.float64).reshape(len(originals), 28, 28)[order]
    n = len(originals)
    fig = fig if fig is not None else Figure(figsize=(1.6 * max(n, 2), 3.8), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        for row, images, text in ((0, originals, "original" if labels is None else f"label {int(labels[i])}"),
                                  (1, rebuilt, f"MSE {mse[i]:.2g}\nmax err {worst[i]:.2g}")):
            ax = axes[row, i]
            ax.imshow(np.clip(images[i], 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(text, fontsize="small")
            ax.set_axis_off()
    fig.suptitle(title or "top: the client's images; bottom: what the server rebuilt from its update")
    return fig
