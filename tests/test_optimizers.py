"""The server optimizers follow Reddi et al. (2020), Algorithm 2, where they say they do."""
import keras
import numpy as np
import pytest

from fedteach import optimizers


def algorithm_2(rule, gradients, lr=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3):
    """Reddi et al.'s server update, written from the paper (x <- x - lr * m / (sqrt(v) + tau), v_{-1} = tau^2)."""
    x, m, v = np.zeros_like(gradients[0]), np.zeros_like(gradients[0]), np.full_like(gradients[0], tau ** 2)
    for g in gradients:
        m = beta_1 * m + (1 - beta_1) * g
        if rule == "adagrad":
            v = v + g ** 2
        elif rule == "adam":
            v = beta_2 * v + (1 - beta_2) * g ** 2
        else:
            v = v - (1 - beta_2) * g ** 2 * np.sign(v - g ** 2)
        x = x - lr * m / (np.sqrt(v) + tau)
    return x


def keras_steps(optimizer, gradients):
    w = keras.Variable(np.zeros_like(gradients[0]))
    for g in gradients:
        optimizer.apply_gradients([(g, w)])
    return keras.ops.convert_to_numpy(w)


GRADIENTS = [np.array([1.0, -0.5, 0.01, 3.0], np.float32), np.array([-0.2, -0.5, 0.3, 0.0], np.float32),
             np.array([0.7, 0.1, -2.0, 0.5], np.float32)]


@pytest.mark.parametrize("rule", ["adagrad", "adam", "yogi"])
def test_fedopt_is_the_papers_rule(rule):
    got = keras_steps(optimizers.FedOpt(rule, learning_rate=0.1), GRADIENTS)
    np.testing.assert_allclose(got, algorithm_2(rule, GRADIENTS), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("helper, rule", [(optimizers.fed_adam, "adam"), (optimizers.fed_adagrad, "adagrad"),
                                          (optimizers.fed_yogi, "yogi")])
def test_paper_helpers_give_the_papers_rule(helper, rule):
    kwargs = {"paper": True} if helper is not optimizers.fed_yogi else {}
    if rule == "adagrad":
        kwargs["initial_accumulator_value"] = 1e-6
    got = keras_steps(helper(0.1, **kwargs), GRADIENTS)
    np.testing.assert_allclose(got, algorithm_2(rule, GRADIENTS), rtol=1e-5, atol=1e-6)


def test_keras_adam_is_not_the_papers_rule_in_the_first_rounds():
    """The default fed_adam is Keras' Adam (bias correction, v starting at 0): a different first step."""
    keras_step = keras_steps(optimizers.fed_adam(0.1), GRADIENTS[:1])
    paper_step = algorithm_2("adam", GRADIENTS[:1])
    assert not np.allclose(keras_step, paper_step, rtol=1e-2)


def test_fed_adagrad_epsilon_is_tau_and_keras_holds_its_square():
    assert optimizers.fed_adagrad(epsilon=1e-3).epsilon == pytest.approx(1e-6)
    assert optimizers.fed_adagrad(epsilon=1e-3, paper=True).epsilon == pytest.approx(1e-3)


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="rule must be one of"):
        optimizers.FedOpt("sgd")
