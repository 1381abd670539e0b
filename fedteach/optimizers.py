"""Server optimizers of adaptive federated optimization (Reddi et al., 2020).

The server of :func:`fedteach.build_federated_averaging_process` treats the
negative of the clients' average update, ``-Δ``, as a gradient and applies it
with any Keras optimizer (``server_optimizer_fn``). Changing that one piece
turns FedAvg into:

* **FedAvg**: ``SGD(1.0)`` adopts the average model;
* **FedAvgM**: ``SGD(learning_rate, momentum=0.9)`` (Hsu et al., 2019);
* **FedAdagrad**: ``Adagrad``;
* **FedAdam**: ``Adam``;
* **FedYogi**: :class:`Yogi` below (Keras has no Yogi).

Keras' ``Adam`` and ``Adagrad`` are not quite the paper's rules (bias
correction, ``v`` starting at 0, epsilon inside the root); :class:`FedOpt`
implements Reddi et al.'s Algorithm 2 exactly, and ``fed_adam(paper=True)`` /
``fed_adagrad(paper=True)`` return it.

The ``fed_*`` functions return such optimizers with the hyperparameters
Reddi et al. recommend (``epsilon`` = their adaptivity ``τ`` = 1e-3, ``β2``
= 0.99). They are optimizer *instances*; ``server_optimizer_fn`` wants a
function, so write ``server_optimizer_fn=lambda: fed_adam(0.01)`` or use
:func:`server_optimizer_fn`.
"""
from __future__ import annotations

import keras
from keras import initializers, ops

__all__ = ["FedOpt", "Yogi", "fed_adagrad", "fed_adam", "fed_avg_momentum", "fed_yogi", "server_optimizer_fn",
           "SERVER_OPTIMIZERS"]


class FedOpt(keras.optimizers.Optimizer):
    """FedAdagrad, FedAdam or FedYogi's server step exactly as Reddi et al. (2020), Algorithm 2.

    With ``g`` the gradient (on the server, minus the clients' average update ``Δ``)::

        m <- beta_1 * m + (1 - beta_1) * g
        v <- v + g**2                                       (rule='adagrad')
        v <- beta_2 * v + (1 - beta_2) * g**2               (rule='adam')
        v <- v - (1 - beta_2) * g**2 * sign(v - g**2)       (rule='yogi')
        w <- w - learning_rate * m / (sqrt(v) + epsilon)

    ``m`` starts at 0 and ``v`` at ``initial_accumulator_value`` (the paper's
    ``v_{-1} >= τ²``; default ``epsilon**2``), with no bias correction. Keras'
    ``Adam`` and ``Adagrad`` differ: Adam starts ``v`` at 0 and divides ``m``
    and ``v`` by ``1 - beta**t``; Adagrad has no momentum and puts its epsilon
    inside the root. ``bias_correction=True`` adds Adam's factors.

    Args:
        rule: ``'adagrad'``, ``'adam'`` or ``'yogi'``.
        learning_rate: the server learning rate ``η``.
        beta_1: momentum decay.
        beta_2: second-moment decay (unused by ``'adagrad'``).
        epsilon: the adaptivity ``τ``, added to ``sqrt(v)``.
        initial_accumulator_value: starting value of ``v``; default ``epsilon**2``.
        bias_correction: divide ``m`` and ``v`` by ``1 - beta**t`` as Adam does.
        **kwargs: other Keras optimizer arguments (``name``, ``weight_decay``...).

    Example:
        >>> import keras, numpy as np
        >>> w = keras.Variable(np.zeros(2, 'float32'))
        >>> opt = FedOpt('adam', learning_rate=0.1, epsilon=1e-3)
        >>> _ = opt.apply_gradients([(np.array([1.0, -1.0], 'float32'), w)])
        >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(w)]  # -0.1 * 0.1 / (sqrt(0.01 + 1e-8) + 0.001)
        [-0.099, 0.099]
    """

    RULES = ("adagrad", "adam", "yogi")

    def __init__(self, rule: str, learning_rate=0.01, beta_1=0.9, beta_2=0.99, epsilon=1e-3,
                 initial_accumulator_value=None, bias_correction=False, name=None, **kwargs):
        if rule not in self.RULES:
            raise ValueError(f"FedOpt: rule must be one of {self.RULES}, got {rule!r}.")
        super().__init__(learning_rate=learning_rate, name=name or f"fed{rule}", **kwargs)
        if not 0.0 <= beta_1 < 1.0 or not 0.0 <= beta_2 < 1.0:
            raise ValueError(f"{rule}: beta_1 and beta_2 must be in [0, 1), got {beta_1} and {beta_2}.")
        if epsilon <= 0:
            raise ValueError(f"{rule}: epsilon (the adaptivity τ) must be > 0, got {epsilon}; Reddi et al. use 1e-3.")
        self.rule = rule
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.initial_accumulator_value = (self.epsilon ** 2 if initial_accumulator_value is None
                                          else float(initial_accumulator_value))
        self.bias_correction = bool(bias_correction)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = self.add_optimizer_variables(var_list, "momentum")
        self._velocities = self.add_optimizer_variables(
            var_list, "velocity", initializer=initializers.Constant(self.initial_accumulator_value))

    def _second_moment(self, v, g2):
        if self.rule == "adagrad":
            return ops.add(v, g2)
        if self.rule == "adam":
            return ops.add(ops.multiply(v, self.beta_2), ops.multiply(g2, 1.0 - self.beta_2))
        return ops.subtract(v, ops.multiply(ops.multiply(g2, 1.0 - self.beta_2), ops.sign(ops.subtract(v, g2))))

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign(m, ops.add(ops.multiply(m, self.beta_1), ops.multiply(g, 1.0 - self.beta_1)))
        self.assign(v, self._second_moment(v, ops.square(g)))
        m_hat, v_hat = m, v
        if self.bias_correction:
            t = ops.cast(self.iterations + 1, variable.dtype)
            m_hat = ops.divide(m, 1.0 - ops.power(ops.cast(self.beta_1, variable.dtype), t))
            v_hat = ops.divide(v, 1.0 - ops.power(ops.cast(self.beta_2, variable.dtype), t))
        self.assign_sub(variable, ops.divide(ops.multiply(lr, m_hat), ops.add(ops.sqrt(v_hat), self.epsilon)))

    def get_config(self):
        config = super().get_config()
        config.update(rule=self.rule, beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon,
                      initial_accumulator_value=self.initial_accumulator_value,
                      bias_correction=self.bias_correction)
        return config


class Yogi(FedOpt):
    """The Yogi optimizer (Zaheer et al., 2018), as FedYogi's server step in Reddi et al. (2020).

    :class:`FedOpt` with ``rule='yogi'``: ``v`` changes additively,
    ``v <- v - (1 - beta_2) * g**2 * sign(v - g**2)``, so it grows and shrinks
    slowly, which makes the effective learning rate more stable than Adam's.

    Example:
        >>> import keras, numpy as np
        >>> w = keras.Variable(np.zeros(2, 'float32'))
        >>> opt = Yogi(learning_rate=0.1, epsilon=1e-3)
        >>> _ = opt.apply_gradients([(np.array([1.0, -1.0], 'float32'), w)])
        >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(w)]  # -0.1 * 0.1 / (sqrt(0.01) + 0.001)
        [-0.099, 0.099]
    """

    def __init__(self, learning_rate=0.01, beta_1=0.9, beta_2=0.99, epsilon=1e-3,
                 initial_accumulator_value=None, bias_correction=False, name="yogi", **kwargs):
        kwargs.pop("rule", None)
        super().__init__("yogi", learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         initial_accumulator_value=initial_accumulator_value,
                         bias_correction=bias_correction, name=name, **kwargs)


def fed_avg_momentum(learning_rate: float = 1.0, momentum: float = 0.9) -> keras.optimizers.SGD:
    """FedAvgM's server step: SGD with momentum on the average update (Hsu et al., 2019).

    Example:
        >>> opt = fed_avg_momentum(1.0, 0.9)
        >>> type(opt).__name__, float(opt.momentum)
        ('SGD', 0.9)
    """
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)


def fed_adagrad(learning_rate: float = 0.1, epsilon: float = 1e-3, initial_accumulator_value: float = 1e-6,
                paper: bool = False):
    """FedAdagrad's server step, with Reddi et al.'s adaptivity ``τ`` = ``epsilon``.

    By default Keras' ``Adagrad`` (no momentum, ``v`` starts at
    ``initial_accumulator_value``): Keras divides by ``sqrt(v + eps)``, with its
    ``eps`` inside the root, so it is given ``eps = τ**2`` (the returned object's
    ``.epsilon`` is ``τ**2``), close to the paper's ``sqrt(v) + τ``. With
    ``paper=True``, exactly Reddi et al.'s Algorithm 2: :class:`FedOpt` with
    ``rule='adagrad'`` (momentum 0.9, ``sqrt(v) + τ``, ``.epsilon`` is ``τ``).

    Example:
        >>> type(fed_adagrad()).__name__, type(fed_adagrad(paper=True)).__name__
        ('Adagrad', 'FedOpt')
    """
    if paper:
        return FedOpt("adagrad", learning_rate=learning_rate, epsilon=epsilon,
                      initial_accumulator_value=initial_accumulator_value)
    return keras.optimizers.Adagrad(learning_rate=learning_rate, epsilon=epsilon ** 2,
                                    initial_accumulator_value=initial_accumulator_value)


def fed_adam(learning_rate: float = 0.01, beta_1: float = 0.9, beta_2: float = 0.99,
             epsilon: float = 1e-3, paper: bool = False):
    """FedAdam's server step with Reddi et al.'s defaults (``β2`` = 0.99, ``τ`` = ``epsilon`` = 1e-3).

    By default Keras' ``Adam``: ``v`` starts at 0 and both moments are
    bias-corrected (``1 - beta**t``). With ``paper=True``, exactly Reddi et al.'s
    Algorithm 2 (:class:`FedOpt` with ``rule='adam'``: ``v`` starts at ``τ**2``,
    no bias correction); the two differ most in the first rounds.

    Example:
        >>> opt = fed_adam(0.01)
        >>> type(opt).__name__, opt.beta_2, opt.epsilon
        ('Adam', 0.99, 0.001)
        >>> fed_adam(0.01, paper=True).rule
        'adam'
    """
    if paper:
        return FedOpt("adam", learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)


def fed_yogi(learning_rate: float = 0.01, beta_1: float = 0.9, beta_2: float = 0.99,
             epsilon: float = 1e-3) -> Yogi:
    """FedYogi's server step: :class:`Yogi` as in Reddi et al.'s Algorithm 2.

    Example:
        >>> type(fed_yogi()).__name__
        'Yogi'
    """
    return Yogi(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)


SERVER_OPTIMIZERS = {
    "sgd": lambda lr: keras.optimizers.SGD(learning_rate=lr),
    "momentum": lambda lr: fed_avg_momentum(lr, 0.9),
    "adagrad": fed_adagrad,
    "adam": fed_adam,
    "yogi": fed_yogi,
}
"""Server optimizers by name: each takes the server learning rate."""


def default_server_learning_rate(name: str) -> float:
    """A server learning rate that works for the named server optimizer on the course's data.

    Example:
        >>> default_server_learning_rate('sgd'), default_server_learning_rate('adam')
        (1.0, 0.01)
    """
    return {"sgd": 1.0, "momentum": 1.0, "adagrad": 0.1}.get(str(name).lower(), 0.01)


def server_optimizer_fn(name: str, learning_rate: float | None = None):
    """A ``server_optimizer_fn`` for a named server optimizer.

    Args:
        name: ``'sgd'`` (FedAvg), ``'momentum'`` (FedAvgM), ``'adagrad'``,
            ``'adam'`` or ``'yogi'``.
        learning_rate: the server learning rate; default 1.0 for sgd and
            momentum, 0.1 for adagrad, 0.01 for adam and yogi.

    Raises:
        ValueError: an unknown name.

    Example:
        >>> fn = server_optimizer_fn('yogi', 0.02)
        >>> type(fn()).__name__, round(float(fn().learning_rate), 6)
        ('Yogi', 0.02)
    """
    key = str(name).lower()
    if key not in SERVER_OPTIMIZERS:
        raise ValueError(f"unknown server optimizer {name!r}; choose one of {sorted(SERVER_OPTIMIZERS)}.")
    if learning_rate is None:
        learning_rate = default_server_learning_rate(key)
    make = SERVER_OPTIMIZERS[key]
    return lambda: make(learning_rate)
