"""FedProx, FedSGD, adaptive server optimizers and aggregators in a process, against NumPy references.

A tiny softmax regression (4 features, 3 classes), three clients of different
sizes, no shuffling, non-zero starting weights; every reference below is a
plain float64 loop that reads like the paper.
"""

import keras
import numpy as np
import pytest

import fedteach as ft
from fedteach import aggregators, optimizers
from fedteach.rounds.fedavg import ServerOptimizer
from fedteach.rounds.fedprox import build_fedprox_process
from fedteach.rounds.fedsgd import build_federated_sgd_process

SIZES = (7, 12, 5)
LR, BATCH, EPOCHS = 0.1, 4, 2
RNG = np.random.default_rng(42)
CLIENTS = [(RNG.normal(size=(n, 4)).astype(np.float32), RNG.integers(0, 3, size=n).astype(np.int32)) for n in SIZES]
W0 = RNG.normal(scale=0.5, size=(4, 3)).astype(np.float32)
B0 = RNG.normal(scale=0.1, size=3).astype(np.float32)


# --- NumPy references ---------------------------------------------------------------------------

def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def gradient(w, b, x, y):
    """Gradient of the mean cross-entropy over (x, y)."""
    p = softmax(x @ w + b)
    p[np.arange(len(y)), y] -= 1.0
    p /= len(y)
    return x.T @ p, p.sum(axis=0)


def client_update(w, b, x, y, mu=0.0):
    """Local SGD (in order, EPOCHS passes, batches of BATCH); FedProx adds mu * (w - w_global)."""
    w_global, b_global = w, b
    x, y = x.astype(np.float64), y
    stream = np.tile(np.arange(len(y)), EPOCHS)
    for start in range(0, len(stream), BATCH):
        idx = stream[start:start + BATCH]
        gw, gb = gradient(w, b, x[idx], y[idx])
        w = w - LR * (gw + mu * (w - w_global))
        b = b - LR * (gb + mu * (b - b_global))
    return w, b


def weighted(values, counts):
    counts = np.asarray(counts, np.float64)
    return sum(v * c for v, c in zip(values, counts)) / counts.sum()


def fedavg_deltas(w, b, mu=0.0):
    """The clients' updates Δ_c = w_c - w and their example counts."""
    results = [client_update(w, b, x, y, mu) for x, y in CLIENTS]
    return [(rw - w, rb - b) for rw, rb in results], [EPOCHS * n for n in SIZES]


class NumpyServer:
    """Server optimizers as written in Keras's docs (Yogi: Reddi et al. 2020, Alg. 2), with g = -Δ."""

    def __init__(self, kind, lr, shapes):
        self.kind, self.lr, self.t = kind, lr, 0
        self.m = [np.zeros(s) for s in shapes]
        self.v = [np.full(s, {"adagrad": 1e-6, "yogi": 1e-6}.get(kind, 0.0)) for s in shapes]

    def step(self, params, deltas):
        self.t += 1
        out = []
        for i, (p, d) in enumerate(zip(params, deltas)):
            g = -d
            if self.kind == "sgd":
                p = p - self.lr * g
            elif self.kind == "momentum":          # Keras SGD(momentum=0.9)
                self.m[i] = 0.9 * self.m[i] - self.lr * g
                p = p + self.m[i]
            elif self.kind == "adagrad":           # Keras Adagrad(epsilon=1e-6)
                self.v[i] = self.v[i] + g ** 2
                p = p - self.lr * g / np.sqrt(self.v[i] + 1e-6)
            elif self.kind == "adam":              # Keras Adam(beta_2=0.99, epsilon=1e-3), bias-corrected
                self.m[i] = 0.9 * self.m[i] + 0.1 * g
                self.v[i] = 0.99 * self.v[i] + 0.01 * g ** 2
                alpha = self.lr * np.sqrt(1 - 0.99 ** self.t) / (1 - 0.9 ** self.t)
                p = p - alpha * self.m[i] / (np.sqrt(self.v[i]) + 1e-3)
            elif self.kind == "yogi":              # Reddi et al.: v -= (1 - b2) g^2 sign(v - g^2)
                self.m[i] = 0.9 * self.m[i] + 0.1 * g
                self.v[i] = self.v[i] - 0.01 * g ** 2 * np.sign(self.v[i] - g ** 2)
                p = p - self.lr * self.m[i] / (np.sqrt(self.v[i]) + 1e-3)
            out.append(p)
        return out


# --- fedteach side ---------------------------------------------------------------------------------

DATA = ft.ClientData.from_arrays({f"c{i}": {"x": x, "y": y[:, None]} for i, (x, y) in enumerate(CLIENTS)})


def federated_data(epochs=EPOCHS):
    return [DATA.create_tf_dataset_for_client(c).repeat(epochs).batch(BATCH) for c in DATA.client_ids]


def model_fn():
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    net.compile(loss=keras.losses.SparseCategoricalCrossentropy(), optimizer=keras.optimizers.SGD(LR),
                metrics=[keras.metrics.SparseCategoricalAccuracy()])
    return ft.from_compiled_keras_model(net, next(iter(federated_data()[0])))


def start(process):
    state = process.initialize()
    weights = ft.ModelWeights.from_lists([W0, B0], [], list(state.model.trainable))
    return ft.ServerState(weights, state.optimizer_state)


def assert_weights(state, w, b, **tolerance):
    tolerance = tolerance or dict(rtol=1e-4, atol=1e-6)
    kernel, bias = state.model.trainable.values()
    np.testing.assert_allclose(kernel, w, **tolerance)
    np.testing.assert_allclose(bias, b, **tolerance)


W0_64, B0_64 = W0.astype(np.float64), B0.astype(np.float64)


# --- FedProx ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["fast", "general"])
def test_fedprox_one_round_equals_numpy(engine):
    mu = 0.5
    process = build_fedprox_process(model_fn, mu=mu, engine=engine)
    state, metrics = process.next(start(process), federated_data())
    assert process.path == engine
    deltas, counts = fedavg_deltas(W0_64, B0_64, mu)
    assert_weights(state, W0_64 + weighted([d[0] for d in deltas], counts),
                   B0_64 + weighted([d[1] for d in deltas], counts))
    # ... and differs from FedAvg, which mu = 0 reproduces.
    fedavg_deltas_, _ = fedavg_deltas(W0_64, B0_64, 0.0)
    assert not np.allclose(weighted([d[0] for d in deltas], counts), weighted([d[0] for d in fedavg_deltas_], counts),
                           atol=1e-4)
    assert str(process.next.type_signature) == str(ft.build_federated_averaging_process(model_fn).next.type_signature)


def test_fedprox_with_mu_zero_is_fedavg_and_negative_mu_is_refused():
    a = ft.build_federated_averaging_process(model_fn)
    b = build_fedprox_process(model_fn, mu=0.0)
    sa, _ = a.next(start(a), federated_data())
    sb, _ = b.next(start(b), federated_data())
    assert_weights(sa, *sb.model.trainable.values(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="proximal_mu"):
        build_fedprox_process(model_fn, mu=-1.0)


def test_every_builder_takes_the_same_positional_arguments():
    """model_fn, client_optimizer_fn, server_optimizer_fn, as the tutorial's FedAvg; the rest by keyword."""
    client, server = (lambda: keras.optimizers.SGD(0.1)), (lambda: keras.optimizers.SGD(2.0))
    fedavg = ft.build_federated_averaging_process(model_fn, client, server)
    fedprox = build_fedprox_process(model_fn, client, server, mu=0.0)
    sa, _ = fedavg.next(start(fedavg), federated_data())
    sb, _ = fedprox.next(start(fedprox), federated_data())
    assert_weights(sa, *sb.model.trainable.values(), rtol=0, atol=0)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'mu'"):
        build_fedprox_process(model_fn, 0.1)
    with pytest.raises(TypeError, match="1 positional argument but 2 were given"):  # FedSGD's clients: no optimizer
        build_federated_sgd_process(model_fn, server)


# --- FedSGD -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["fast", "general"])
def test_fedsgd_one_round_equals_numpy(engine):
    process = build_federated_sgd_process(model_fn, engine=engine)
    assert str(process.next.type_signature) == str(ft.build_federated_averaging_process(model_fn).next.type_signature)
    state, metrics = process.next(start(process), federated_data())
    assert process.path == engine
    grads = [gradient(W0_64, B0_64, x.astype(np.float64), y) for x, y in CLIENTS]
    counts = list(SIZES)   # repeat(EPOCHS) leaves each client's average gradient unchanged
    assert_weights(state, W0_64 - 0.1 * weighted([g[0] for g in grads], counts),
                   B0_64 - 0.1 * weighted([g[1] for g in grads], counts))
    x = np.concatenate([c[0] for c in CLIENTS]).astype(np.float64)
    y = np.concatenate([c[1] for c in CLIENTS])
    p = softmax(x @ W0_64 + B0_64)
    assert metrics["loss"] == pytest.approx(-np.log(p[np.arange(len(y)), y]).mean(), rel=1e-5)
    assert metrics["num_examples"] == EPOCHS * sum(SIZES)


def test_fedsgd_engines_agree_and_use_the_server_optimizer():
    states = {}
    for engine in ("fast", "general"):
        process = build_federated_sgd_process(model_fn, server_optimizer_fn=lambda: optimizers.fed_adam(0.05), engine=engine)
        state = start(process)
        for _ in range(3):
            state, _ = process.next(state, federated_data())
        states[engine] = state
    assert_weights(states["fast"], *states["general"].model.trainable.values(), rtol=1e-4, atol=1e-5)
    assert states["fast"].round_num == 3 and len(states["fast"].optimizer_state) == 5   # iterations, m and v x2


# --- server optimizers ------------------------------------------------------------------------------

SERVER_LR = {"sgd": 1.0, "momentum": 1.0, "adagrad": 0.1, "adam": 0.05, "yogi": 0.05}


@pytest.mark.parametrize("name", ["sgd", "momentum", "adagrad", "adam", "yogi"])
def test_server_optimizers_equal_numpy_over_three_rounds(name):
    process = ft.build_federated_averaging_process(
        model_fn, server_optimizer_fn=optimizers.server_optimizer_fn(name, SERVER_LR[name]))
    state = start(process)
    reference = NumpyServer(name, SERVER_LR[name], [W0.shape, B0.shape])
    w, b = W0_64, B0_64
    for _ in range(3):
        state, _ = process.next(state, federated_data())
        deltas, counts = fedavg_deltas(w, b)
        w, b = reference.step([w, b], [weighted([d[0] for d in deltas], counts),
                                       weighted([d[1] for d in deltas], counts)])
    assert_weights(state, w, b, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("learning_rate", [1.0, 0.7, 0.013])
def test_the_servers_numpy_sgd_step_is_keras_sgd_bit_for_bit(learning_rate):
    """Plain server SGD skips TensorFlow; its weights and state equal Keras' SGD step exactly."""
    rng = np.random.default_rng(0)
    weights = ft.ModelWeights.from_lists([rng.normal(size=(6, 3)).astype(np.float32)], [], ["kernel"])
    update = [rng.normal(size=(6, 3)).astype(np.float32)]
    server = ServerOptimizer(keras.optimizers.SGD(learning_rate), weights)
    assert server._plain_sgd
    new, state = server.apply(weights, server.initial_state(), update)
    server._plain_sgd = False  # the Keras optimizer's compiled step
    expected, expected_state = server.apply(weights, server.initial_state(), update)
    np.testing.assert_array_equal(new.trainable["kernel"], expected.trainable["kernel"])
    assert new.trainable["kernel"].dtype == np.float32 and state == expected_state == (1,)
    assert not ServerOptimizer(keras.optimizers.SGD(1.0, momentum=0.9), weights)._plain_sgd


# --- aggregators in a process --------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["fast", "general"])
def test_unweighted_mean_in_a_process_equals_numpy(engine):
    process = ft.build_federated_averaging_process(model_fn, engine=engine,
                                                   aggregator=aggregators.unweighted_mean())
    state, metrics = process.next(start(process), federated_data())
    deltas, _ = fedavg_deltas(W0_64, B0_64)
    assert_weights(state, W0_64 + np.mean([d[0] for d in deltas], axis=0),
                   B0_64 + np.mean([d[1] for d in deltas], axis=0))
    assert set(metrics) == {"sparse_categorical_accuracy", "loss", "num_examples"}


def test_clipping_and_dp_in_a_process():
    clip_norm = 0.05
    process = ft.build_federated_averaging_process(model_fn, aggregator=aggregators.chain(
        aggregators.clip(clip_norm), aggregators.unweighted_mean()))
    state, metrics = process.next(start(process), federated_data())
    deltas, _ = fedavg_deltas(W0_64, B0_64)
    norms = [np.sqrt((d[0] ** 2).sum() + (d[1] ** 2).sum()) for d in deltas]
    assert min(norms) > clip_norm and metrics["clipped_fraction"] == 1.0
    expected = [np.mean([d[i] * clip_norm / n for d, n in zip(deltas, norms)], axis=0) for i in (0, 1)]
    assert_weights(state, W0_64 + expected[0], B0_64 + expected[1])

    dp = aggregators.dp_mean(noise_multiplier=0.5, clip_norm=clip_norm, total_clients=30)
    runs = []
    for _ in range(2):
        process = ft.build_federated_averaging_process(model_fn, seed=3, aggregator=dp)
        assert "epsilon=float32@SERVER" in str(process.next.type_signature)
        state = start(process)
        for _ in range(2):
            state, metrics = process.next(state, federated_data())
        runs.append(state)
    assert_weights(runs[0], *runs[1].model.trainable.values(), rtol=0, atol=0)   # noise from (seed, round)
    assert metrics["epsilon"] == pytest.approx(aggregators.dp_epsilon(0.5, 0.1, 2, 1e-5))
    assert metrics["noise_stddev"] == pytest.approx(0.5 * clip_norm / 3)
    assert str(metrics).startswith("<sparse_categorical_accuracy=") and "epsilon=" in str(metrics)


@pytest.mark.parametrize("engine", ["fast", "general"])
def test_compression_reports_bytes_and_stays_close(engine):
    process = ft.build_federated_averaging_process(model_fn, engine=engine, aggregator=aggregators.compressed_mean(8))
    state, metrics = process.next(start(process), federated_data())
    assert metrics["bytes_sent"] == 3 * ((12 + 8) + (3 + 8))
    assert metrics["bytes_uncompressed"] == 3 * 4 * 15
    deltas, counts = fedavg_deltas(W0_64, B0_64)
    steps = [max((d[0].max() - d[0].min()), (d[1].max() - d[1].min())) / 255 for d in deltas]
    assert_weights(state, W0_64 + weighted([d[0] for d in deltas], counts),
                   B0_64 + weighted([d[1] for d in deltas], counts), rtol=0, atol=max(steps) + 1e-6)


def test_fedsgd_composes_with_an_aggregator():
    process = build_federated_sgd_process(model_fn, aggregator=aggregators.unweighted_mean())
    state, _ = process.next(start(process), federated_data())
    grads = [gradient(W0_64, B0_64, x.astype(np.float64), y) for x, y in CLIENTS]
    assert_weights(state, W0_64 - 0.1 * np.mean([g[0] for g in grads], axis=0),
                   B0_64 - 0.1 * np.mean([g[1] for g in grads], axis=0))


# --- personalization ----------------------------------------------------------------------------------

def test_personalization_reports_per_client_and_average():
    from fedteach.personalization import evaluate_personalization

    process = ft.build_federated_averaging_process(model_fn)
    state = start(process)
    test = ft.ClientData.from_arrays({c: {"x": x[:3], "y": y[:3, None]} for c, (x, y) in
                                      zip(DATA.client_ids, CLIENTS)})
    result = evaluate_personalization(model_fn, state.model, DATA, test, steps=5, learning_rate=0.1,
                                      batch_size=4, preprocess=lambda ds: ds)
    assert list(result["clients"]) == DATA.client_ids
    for client, row in result["clients"].items():
        assert set(row) >= {"global_accuracy", "personalized_accuracy", "global_loss", "personalized_loss"}
    mean = np.mean([row["personalized_loss"] for row in result["clients"].values()])
    assert result["average"]["personalized_loss"] == pytest.approx(mean)
