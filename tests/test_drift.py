"""ft.drift: what it records round by round, that it shows FedAvg's drift and FedProx and SCAFFOLD reducing it.

The setting: the offline digits of 30 writers dealt to 10 clients in two
label-sorted shards each, 10 local epochs at SGD 0.1 (many local steps on
few labels: where drift matters), every client in every round.
"""
import keras
import numpy as np
import pytest

import fedteach as ft

CLIENTS, EPOCHS, LR, ROUNDS = 10, 10, 0.1, 4


@pytest.fixture(scope="module")
def digits():
    train, test = ft.drift.non_iid_digits(num_clients=CLIENTS, writers=30)
    data = ft.make_federated_data(train, train.client_ids, ft.preprocess_for_tutorial(num_epochs=EPOCHS, seed=0))
    return data, ft.make_federated_data(test, test.client_ids, ft.preprocess_for_tutorial(1, 100, 0))


def model_fn_for(data, metrics=True):
    def model_fn():
        net = keras.Sequential([keras.Input((784,)),
                                keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros")])
        net.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(LR),
                    metrics=[keras.metrics.SparseCategoricalAccuracy()] if metrics else [])
        return ft.from_compiled_keras_model(net, next(iter(data[0])))
    return model_fn


@pytest.fixture(scope="module")
def histories(digits):
    data, test_data = digits
    model_fn = model_fn_for(data)
    processes = {"FedAvg": ft.build_federated_averaging_process(model_fn),
                 "FedProx": ft.build_fedprox_process(model_fn, mu=0.1),
                 "SCAFFOLD": ft.build_scaffold_process(model_fn, total_clients=CLIENTS)}
    return {name: ft.drift.track(p, data, rounds=ROUNDS, test_data=test_data) for name, p in processes.items()}


def test_fedprox_and_scaffold_keep_the_clients_closer_together_than_fedavg(histories):
    drift = {name: h.drift for name, h in histories.items()}
    assert drift["FedProx"].mean() < 0.9 * drift["FedAvg"].mean(), drift
    assert drift["SCAFFOLD"].mean() < 0.9 * drift["FedAvg"].mean(), drift
    # the first round starts from the same model with c = c_i = 0: SCAFFOLD's clients drift as FedAvg's
    assert drift["SCAFFOLD"][0] == pytest.approx(drift["FedAvg"][0], rel=1e-4)


def test_a_history_holds_every_round_of_every_client(histories, digits):
    data, _ = digits
    history = histories["FedAvg"]
    parameters = 784 * 10 + 10
    assert history.global_models.shape == (ROUNDS + 1, parameters)
    assert [m.shape for m in history.client_models] == [(CLIENTS, parameters)] * ROUNDS
    assert history.client_ids[0] == [d.client_id for d in data]
    assert [a.shape for a in history.client_accuracy] == [(CLIENTS,)] * ROUNDS
    assert len(history.test_accuracy) == len(history.metrics) == ROUNDS
    assert np.all((history.client_accuracy[-1] >= 0) & (history.client_accuracy[-1] <= 1))
    # FedAvg with server SGD(1.0) adopts the example-weighted mean of the clients' models
    sizes = [len(d.source["label"]) for d in data]
    np.testing.assert_allclose(history.global_models[-1], np.average(history.client_models[-1], axis=0, weights=sizes),
                               atol=1e-6)
    np.testing.assert_allclose(history.update_norms[0],
                               np.linalg.norm(history.client_models[0] - history.global_models[0], axis=1))


def test_tracking_leaves_the_process_as_it_was(digits):
    data, _ = digits
    model_fn = model_fn_for(data)
    tracked, plain = ft.build_federated_averaging_process(model_fn), ft.build_federated_averaging_process(model_fn)
    history = ft.drift.track(tracked, data, rounds=1)
    state, _ = plain.next(plain.initialize(), data)
    np.testing.assert_array_equal(history.global_models[1], np.concatenate(  # the same update, exactly
        [np.ravel(w) for w in state.model.trainable.values()]))
    assert tracked._engine.keep_clients is False  # restored after tracking


def test_sampled_clients_follow_the_seed(digits):
    data, _ = digits
    process = ft.build_federated_averaging_process(model_fn_for(data))
    history = ft.drift.track(process, data, rounds=2, clients_per_round=3, seed=1)
    ids = [d.client_id for d in data]
    assert history.client_ids == [[ids[i] for i in ft.sample_clients(list(range(CLIENTS)), 3, r, seed=1)]
                                  for r in (1, 2)]
    assert [m.shape[0] for m in history.client_models] == [3, 3]


def test_a_model_without_an_accuracy_metric_is_refused_with_the_fix(digits):
    data, _ = digits
    process = ft.build_federated_averaging_process(model_fn_for(data, metrics=False))
    with pytest.raises(ValueError, match=r"no accuracy metric. .*SparseCategoricalAccuracy"):
        ft.drift.track(process, data, rounds=1)


def test_the_plot_shows_each_algorithm_and_compares_them(histories, tmp_path):
    fig = ft.drift.plot(histories)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["FedAvg: where the models go", "FedAvg: global model's accuracy per client",
                          "FedAvg: clients' update norms"]
    assert titles[-2:] == ["drift: mean distance of the clients' models to their mean", "global model's test accuracy"]
    assert len(fig.axes) == 3 * len(histories) + 2
    drift_lines = fig.axes[-2].get_lines()
    assert [line.get_label() for line in drift_lines] == list(histories)
    np.testing.assert_allclose(drift_lines[0].get_ydata(), histories["FedAvg"].drift)
    fig.savefig(tmp_path / "drift.png")
    assert (tmp_path / "drift.png").stat().st_size > 10_000
