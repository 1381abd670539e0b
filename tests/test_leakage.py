"""What an update reveals: the server rebuilds a client's digits from the update of a real fedteach round.

All attacks read only what the server has: the model it broadcast and, through
``record_updates``, the update each client sent (or, with DP, the next global
model; with secure aggregation, the masked vectors).
"""
import time

import keras
import numpy as np
import pytest

import fedteach as ft
from fedteach import leakage
from fedteach import secure_aggregation as sa
from fedteach.aggregators import chain, dp_mean, weighted_mean

LEARNING_RATE = 0.02


@pytest.fixture(scope="module")
def digits():
    """Offline digits of one writer: four with distinct labels first, then more."""
    train, _ = ft.load_offline_digits(num_clients=5, seed=0)
    arrays = train.client_arrays(train.client_ids[0])
    first = [int(np.flatnonzero(arrays["label"] == label)[0]) for label in (8, 6, 2, 7)]
    return arrays["pixels"][first], arrays["label"][first]


def clients_of(pixels, labels, per_client, batch_size):
    """Client datasets of ``per_client`` examples each, one epoch, no shuffle: one local SGD step per client."""
    data = ft.ClientData.from_arrays({f"client_{i}": {"pixels": pixels[i * per_client:(i + 1) * per_client],
                                                      "label": labels[i * per_client:(i + 1) * per_client]}
                                      for i in range(len(labels) // per_client)})
    preprocess = ft.preprocess_for_tutorial(num_epochs=1, batch_size=batch_size, shuffle_buffer=0)
    return ft.make_federated_data(data, data.client_ids, preprocess)


def network(hidden=None, kernel_initializer="glorot_uniform"):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((784,))] + ([keras.layers.Dense(hidden, activation="sigmoid")] if hidden else [])
    return keras.Sequential(layers + [keras.layers.Dense(10, activation="softmax",
                                                         kernel_initializer=kernel_initializer)])


def one_round(federated_data, aggregator, hidden=None, kernel_initializer="glorot_uniform"):
    """A real fedteach round; returns (the state before, the state after, a Keras model with the broadcast weights)."""
    def model_fn():
        net = network(hidden, kernel_initializer)
        net.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(LEARNING_RATE))
        return ft.from_compiled_keras_model(net, next(iter(federated_data[0])))

    process = ft.build_federated_averaging_process(model_fn, aggregator=aggregator)
    before = process.initialize()
    after, _ = process.next(before, federated_data)
    server_copy = network(hidden, kernel_initializer)
    ft.assign_weights_to_keras_model(server_copy, before.model)
    return before, after, server_copy


def correlation(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


# ---------------------------------------------------------------- one example, dense first layer: exact


@pytest.mark.parametrize("hidden", [None, 32], ids=["linear", "mlp"])
def test_the_gradient_of_one_example_gives_the_example_exactly(digits, hidden):
    pixels, labels = digits
    kernel, bias = leakage.first_dense_layer(leakage.client_gradient(network(hidden), pixels[:1], labels[:1]))
    np.testing.assert_allclose(kernel, np.outer(pixels[0].ravel(), bias), atol=1e-6)   # dL/dW = x (x) dL/db
    rebuilt = leakage.invert_dense_gradient(kernel, bias).reshape(28, 28)
    assert np.abs(rebuilt - pixels[0]).max() < 1e-4


def test_the_server_rebuilds_each_clients_digit_from_the_update_it_sends(digits):
    """Three clients of one example each, batch 1, one epoch: each update is -lr * that example's gradient."""
    pixels, labels = digits
    seen = []
    before, after, server_copy = one_round(clients_of(pixels[:3], labels[:3], 1, 1),
                                           chain(leakage.record_updates(seen), weighted_mean()))
    updates = seen[0]["updates"]
    assert len(updates) == 3
    for client, update in enumerate(updates):
        rebuilt = leakage.reconstruct_from_update(update)   # the learning rate is not needed: it cancels
        assert np.abs(rebuilt - pixels[client]).max() < 1e-4
        gradient = leakage.client_gradient(server_copy, pixels[client:client + 1], labels[client:client + 1])
        for u, g in zip(update, gradient):   # the update is -lr times the gradient at the broadcast weights
            np.testing.assert_allclose(-u / LEARNING_RATE, g, atol=1e-4)


def test_with_one_client_the_next_global_model_gives_the_digit_away(digits):
    pixels, labels = digits
    before, after, _ = one_round(clients_of(pixels[:1], labels[:1], 1, 1), None)
    rebuilt = leakage.reconstruct_from_update(leakage.model_change(before, after))
    assert np.abs(rebuilt - pixels[0]).max() < 1e-4


def test_a_batch_update_inverts_to_a_mix_of_its_images(digits):
    pixels, labels = digits
    seen = []
    one_round(clients_of(pixels, labels, 4, 4), chain(leakage.record_updates(seen), weighted_mean()))
    mix = leakage.reconstruct_from_update(seen[0]["updates"][0])
    assert all(np.abs(mix - p).max() > 0.1 for p in pixels)
    assert all(correlation(mix, p) > 0.3 for p in pixels)


def test_a_gradient_without_a_bias_gradient_is_refused():
    with pytest.raises(ValueError, match="the bias gradient is 0"):
        leakage.invert_dense_gradient(np.zeros((784, 10)), np.zeros(10))
    with pytest.raises(ValueError, match="needs a dense first layer"):
        leakage.first_dense_layer([np.zeros((3, 3, 1, 8)), np.zeros(8)])


# ---------------------------------------------------------------- a batch of four: gradient matching


def test_labels_of_a_batch_follow_from_the_bias_gradient_while_the_model_is_unsure(digits):
    pixels, labels = digits
    for net in (network(kernel_initializer="zeros"), network(hidden=32)):
        gradient = leakage.client_gradient(net, pixels, labels)
        assert leakage.infer_labels(gradient, 4).tolist() == sorted(labels.tolist())


@pytest.mark.parametrize("hidden, kernel_initializer", [(None, "zeros"), (32, "glorot_uniform")],
                         ids=["linear-zeros", "mlp"])
def test_gradient_matching_rebuilds_a_batch_of_four_from_one_update(digits, hidden, kernel_initializer):
    """One client, four examples, batch 4, one epoch: its update is -lr times the batch's mean gradient."""
    pixels, labels = digits
    seen = []
    _, _, server_copy = one_round(clients_of(pixels, labels, 4, 4),
                                  chain(leakage.record_updates(seen), weighted_mean()), hidden, kernel_initializer)
    gradient = [-u / LEARNING_RATE for u in seen[0]["updates"][0]]
    start = time.perf_counter()
    found = leakage.match_gradients(server_copy, gradient, batch_size=4, max_iterations=300, seed=0)
    seconds = time.perf_counter() - start
    order, mse, worst = leakage.match_images(pixels, found.images)
    print(f"\n{'linear' if hidden is None else f'MLP ({hidden} hidden)'}: {found.iterations} L-BFGS-B iterations, {seconds:.1f} s, distance "
          f"{found.distance:.2g}, per image MSE {np.array2string(mse, precision=2)}, "
          f"max abs error {np.array2string(worst, precision=2)}")
    assert sorted(found.labels.tolist()) == sorted(labels.tolist())
    np.testing.assert_array_equal(found.labels[order], labels)   # each image paired with its own label
    assert mse.max() < 1e-4 and worst.max() < 0.05
    again = leakage.match_gradients(server_copy, gradient, batch_size=4, max_iterations=300, seed=0)
    np.testing.assert_array_equal(again.images, found.images)


def test_plot_reconstructions_pairs_each_original_with_its_reconstruction(digits):
    pixels, labels = digits
    fig = leakage.plot_reconstructions(pixels, pixels[::-1].reshape(4, 784) + 0.01, labels=labels)
    assert len(fig.axes) == 8
    assert [ax.get_title() for ax in fig.axes[:4]] == [f"label {label}" for label in labels]
    assert all(ax.get_title().startswith("MSE 0.0001\n") for ax in fig.axes[4:])


# ---------------------------------------------------------------- what DP noise and secure aggregation leave


def test_dp_noise_leaves_noise_in_the_released_model(digits):
    """Central DP: the trusted server adds noise; who sees the next global model rebuilds noise, not the digit."""
    pixels, labels = digits
    data = clients_of(pixels[:1], labels[:1], 1, 1)
    reconstructions = {}
    for z in (0.0, 0.01, 1.0):
        before, after, _ = one_round(data, dp_mean(noise_multiplier=z, clip_norm=1.0))
        reconstructions[z] = leakage.reconstruct_from_update(leakage.model_change(before, after))
    print("\ncorrelation with the digit after dp_mean(clip 1): "
          + ", ".join(f"z={z:g}: {correlation(r, pixels[0]):.3f}" for z, r in reconstructions.items()))
    assert np.abs(reconstructions[0.0] - pixels[0]).max() < 1e-4   # clipping alone hides nothing
    assert abs(correlation(reconstructions[1.0], pixels[0])) < 0.1
    assert np.mean((reconstructions[1.0] - pixels[0]) ** 2) > np.var(pixels[0])   # worse than a blank guess


def test_gradient_matching_on_a_dp_noised_update_finds_noise(digits):
    """A hundredth of the noise DP-FedAvg's accounting needs (z = 0.01) already defeats the batch attack."""
    pixels, labels = digits
    before, after, server_copy = one_round(clients_of(pixels, labels, 4, 4), dp_mean(0.01, clip_norm=1.0), 32)
    gradient = [-u / LEARNING_RATE for u in leakage.model_change(before, after)]
    found = leakage.match_gradients(server_copy, gradient, batch_size=4, labels=np.sort(labels), max_iterations=300)
    order, mse, _ = leakage.match_images(pixels, found.images)
    print(f"\nDLG on dp_mean(z=0.01): distance {found.distance:.2g}, per image MSE {np.array2string(mse, precision=2)}")
    assert found.distance > 0.5
    assert all(abs(correlation(found.images[order[i]], pixels[i])) < 0.1 for i in range(4))
    assert mse.min() > np.var(pixels)


def test_secure_aggregation_shows_the_server_masked_noise_and_a_mix(digits):
    pixels, labels = digits
    seen = []
    before, after, _ = one_round(clients_of(pixels[:3], labels[:3], 1, 1),
                                 sa.secure_mean(clip_value=1.0, server_view=seen))
    view = seen[0]
    rebuilt = leakage.reconstruct_from_update(sa.client_view(view, 0))   # all the server has of client 0
    assert abs(correlation(rebuilt, pixels[0])) < 0.1
    mix = leakage.reconstruct_from_update(leakage.model_change(before, after))   # the mean of the three updates
    assert all(np.abs(mix - p).max() > 0.1 for p in pixels[:3])
