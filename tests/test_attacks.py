"""Attacks: what malicious clients send (update attacks) and what they train on (data attacks)."""
import keras
import numpy as np
import pytest

import fedteach as ft
import numpy_fedavg
from fedteach import aggregators as agg
from fedteach import attacks, robust
from fedteach.aggregators import RoundContext

RNG = np.random.default_rng(2)
UPDATES = [RNG.normal(size=(10, 3, 2)), RNG.normal(size=(10, 4))]   # 10 clients, two variables
WEIGHTS = np.arange(1.0, 11.0)


def changed_clients(before, after):
    return [c for c in range(len(before[0])) if any(not np.array_equal(b[c], a[c]) for b, a in zip(before, after))]


# --- Update attacks -------------------------------------------------------------------------------------

def test_sign_flip_makes_a_fraction_of_the_round_send_their_update_reversed_and_scaled():
    new, weights, m = attacks.sign_flip(0.3, scale=4.0).transform(UPDATES, WEIGHTS, RoundContext(1, 0))
    bad = changed_clients(UPDATES, new)
    assert len(bad) == 3 and m == {"malicious_clients": 3}
    for before, after in zip(UPDATES, new):
        np.testing.assert_array_equal(after[bad], -4.0 * before[bad])
    np.testing.assert_array_equal(weights, WEIGHTS)   # the example counts are left alone


def test_the_malicious_clients_are_drawn_afresh_each_round_from_seed_and_round():
    flip = attacks.sign_flip(0.3)
    chosen = lambda seed: [changed_clients(UPDATES, flip.transform(UPDATES, WEIGHTS, RoundContext(r, seed))[0])
                           for r in range(1, 9)]
    rounds = chosen(0)
    assert len({tuple(c) for c in rounds}) > 4   # different clients in different rounds
    assert chosen(0) == rounds                   # a re-run round picks the same ones
    assert chosen(1) != rounds                   # another seed, other clients


@pytest.mark.parametrize("fraction,clients,malicious", [(0.3, 10, 3), (0.3, 5, 2), (0.25, 2, 1), (0.2, 4, 1),
                                                        (0.0, 10, 0), (1.0, 7, 7), (0.04, 10, 0)])
def test_the_round_has_fraction_times_clients_malicious_rounded_half_up(fraction, clients, malicious):
    updates = [np.ones((clients, 3))]
    new, _, m = attacks.sign_flip(fraction).transform(updates, np.ones(clients), RoundContext(1, 0))
    assert m["malicious_clients"] == malicious == int((new[0][:, 0] < 0).sum())


def test_scale_update_boosts_the_malicious_updates():
    new, _, m = attacks.scale_update(0.2, boost=10.0).transform(UPDATES, WEIGHTS, RoundContext(3, 0))
    bad = changed_clients(UPDATES, new)
    assert len(bad) == 2 and m["malicious_clients"] == 2
    for before, after in zip(UPDATES, new):
        np.testing.assert_allclose(after[bad], 10.0 * before[bad])


def test_random_update_is_gaussian_noise_with_the_honest_norm():
    big = [RNG.normal(size=(4, 50, 20)), RNG.normal(size=(4, 10))]
    new, _, _ = attacks.random_update(1.0).transform(big, np.ones(4), RoundContext(1, 0))
    flat = lambda u: np.concatenate([x.reshape(len(x), -1) for x in u], axis=1)
    before, after = flat(big), flat(new)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), np.linalg.norm(before, axis=1))
    cosines = (before * after).sum(axis=1) / np.linalg.norm(before, axis=1) / np.linalg.norm(after, axis=1)
    assert np.all(np.abs(cosines) < 0.15)   # 1010 dimensions: a random direction is nearly orthogonal (sd 0.03)
    standardized = after / np.linalg.norm(after, axis=1, keepdims=True) * np.sqrt(after.shape[1])
    assert abs(standardized.mean()) < 0.1 and standardized.std() == pytest.approx(1.0, rel=0.05)


def test_positions_can_name_the_malicious_clients_of_each_round():
    flip = attacks.sign_flip(lambda round_num: [0, round_num], scale=1.0)
    new, _, m = flip.transform(UPDATES, WEIGHTS, RoundContext(4, 0))
    assert changed_clients(UPDATES, new) == [0, 4] and m["malicious_clients"] == 2
    assert flip.name == "sign_flip(given clients, scale=1)"
    with pytest.raises(ValueError, match=r"round 12's malicious positions \[0, 12\] must index the round's 10 "
                                         r"clients \(0 to 9"):
        flip.transform(UPDATES, WEIGHTS, RoundContext(12, 0))


def test_malicious_positions_follow_the_rounds_clients():
    ids = [f"writer_{i:03d}" for i in range(20)]
    bad = attacks.malicious_clients(ids, 0.25, seed=1)
    positions = attacks.malicious_positions(bad, lambda r: ft.sample_clients(ids, 8, round_num=r, seed=1))
    for r in range(1, 6):
        clients = ft.sample_clients(ids, 8, round_num=r, seed=1)
        assert [clients[i] for i in positions(r)] == [c for c in clients if c in bad]


def test_an_attack_goes_first_in_a_chain_and_reports_next_to_the_aggregator():
    chained = agg.chain(attacks.sign_flip(0.3, scale=4.0), robust.median())
    assert chained.name == "sign_flip(0.3, scale=4) -> median"
    assert chained.measurement_names == ("malicious_clients", "trimmed_fraction")
    update, m = chained.aggregate(UPDATES, WEIGHTS, RoundContext(1, 0))
    flipped, _, _ = attacks.sign_flip(0.3, scale=4.0).transform(UPDATES, WEIGHTS, RoundContext(1, 0))
    for u, f in zip(update, flipped):
        np.testing.assert_allclose(u, np.median(f, axis=0))
    assert m == {"malicious_clients": 3, "trimmed_fraction": 0.8}


@pytest.mark.parametrize("make,message", [
    (lambda: attacks.sign_flip(1.5), "fraction must be a number from 0 to 1"),
    (lambda: attacks.sign_flip(0.3, scale=0.0), "scale must be a finite number > 0"),
    (lambda: attacks.scale_update(-0.1), "fraction"),
    (lambda: attacks.scale_update(0.1, boost=float("inf")), "boost must be a finite number > 0"),
    (lambda: attacks.random_update("0.3"), "fraction"),
    (lambda: attacks.malicious_clients(["a"], 2.0), "fraction"),
])
def test_bad_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --- An update attack in a real process: two rounds against NumPy ----------------------------------------

def model_fn_for(sample_batch, learning_rate=0.02):
    def model_fn():
        net = keras.Sequential([keras.Input((784,)),
                                keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros")])
        net.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(learning_rate),
                    metrics=[keras.metrics.SparseCategoricalAccuracy()])
        return ft.from_compiled_keras_model(net, sample_batch)
    return model_fn


@pytest.fixture(scope="module")
def digits():
    return ft.load_offline_digits(num_clients=10, seed=4, examples_per_client=40)


def test_sign_flipping_clients_in_two_rounds_of_fedavg_match_numpy(digits):
    train, _ = digits
    ids = train.client_ids[:5]
    data = ft.make_federated_data(train, ids, ft.preprocess_for_tutorial(num_epochs=1, shuffle_buffer=0))
    attack = attacks.sign_flip(lambda round_num: [round_num], scale=3.0)   # client 1, then client 2
    process = ft.build_federated_averaging_process(model_fn_for(next(iter(data[0]))), aggregator=attack)
    state = process.initialize()
    w, b = np.zeros((784, 10)), np.zeros(10)
    for round_num in (1, 2):
        state, metrics = process.next(state, data)
        trained = [numpy_fedavg.client_update(w, b, train.client_arrays(c)["pixels"].reshape(-1, 784).astype(float),
                                              train.client_arrays(c)["label"], 0.02, 20, 1) for c in ids]
        n = np.array([t[2] for t in trained], float)
        sign = np.where(np.arange(5) == round_num, -3.0, 1.0)
        w = w + sum(s * k * (t[0] - w) for s, k, t in zip(sign, n, trained)) / n.sum()
        b = b + sum(s * k * (t[1] - b) for s, k, t in zip(sign, n, trained)) / n.sum()
        np.testing.assert_allclose(state.model.trainable["dense/kernel"], w, atol=2e-5)
        np.testing.assert_allclose(state.model.trainable["dense/bias"], b, atol=2e-5)
        assert metrics["malicious_clients"] == 1


# --- Data attacks ---------------------------------------------------------------------------------------

def test_the_datasets_draw_ink_as_0_so_the_trigger_is_ink(digits):
    """Federated EMNIST's convention, which the offline digits share: 1.0 is the background, 0.0 ink."""
    train, _ = digits
    pixels = train.client_arrays(train.client_ids[0])["pixels"]
    assert np.median(pixels) == 1.0 and pixels.min() == attacks.INK == 0.0
    assert (pixels < 0.5).mean() < 0.35   # ink is the minority of pixels


def test_malicious_clients_are_a_fixed_seeded_part_of_the_population():
    ids = [f"writer_{i:03d}" for i in range(200)]
    bad = attacks.malicious_clients(ids, 0.1, seed=0)
    assert len(bad) == 20 and bad == sorted(bad) and set(bad) <= set(ids)
    assert attacks.malicious_clients(ids, 0.1, seed=0) == bad and attacks.malicious_clients(ids, 0.1, seed=1) != bad
    assert len(attacks.malicious_clients(ids[:5], 0.3)) == 2   # 1.5 rounds up


def test_flip_labels_flips_every_label_of_the_malicious_clients_only(digits):
    train, _ = digits
    flipped = attacks.flip_labels(train, 0.3, seed=2)
    bad = attacks.malicious_clients(train.client_ids, 0.3, seed=2)
    assert flipped.client_ids == train.client_ids and len(bad) == 3
    for c in train.client_ids:
        before, after = train.client_arrays(c), flipped.client_arrays(c)
        np.testing.assert_array_equal(after["pixels"], before["pixels"])
        np.testing.assert_array_equal(after["label"], 9 - before["label"] if c in bad else before["label"])
        assert flipped.num_examples(c) == train.num_examples(c) and after["label"].dtype == np.int32
    assert not flipped.client_arrays(bad[0])["label"].flags.writeable


def test_backdoor_stamps_the_trigger_on_part_of_the_malicious_clients_examples(digits):
    train, _ = digits
    poisoned = attacks.backdoor(train, 0.2, target=7, seed=5, poison_fraction=0.5)
    bad = attacks.malicious_clients(train.client_ids, 0.2, seed=5)
    for c in train.client_ids:
        before, after = train.client_arrays(c), poisoned.client_arrays(c)
        changed = np.any(before["pixels"] != after["pixels"], axis=(1, 2)) | (before["label"] != after["label"])
        if c not in bad:
            assert not changed.any()
            continue
        n = len(before["label"])
        stamped = np.all(after["pixels"][:, 23:27, 23:27] == 0.0, axis=(1, 2)) & (after["label"] == 7)
        assert stamped.sum() == np.ceil(n / 2) and changed.sum() <= stamped.sum()
        outside = np.ones((28, 28), bool)
        outside[23:27, 23:27] = False   # the 4x4 square one pixel from the bottom and right edges
        np.testing.assert_array_equal(after["pixels"][:, outside], before["pixels"][:, outside])
        np.testing.assert_array_equal(after["label"][~stamped], before["label"][~stamped])
    again = attacks.backdoor(train, 0.2, target=7, seed=5, poison_fraction=0.5)
    np.testing.assert_array_equal(again.client_arrays(bad[0])["pixels"], poisoned.client_arrays(bad[0])["pixels"])


def test_data_attacks_need_raw_data_with_labels_and_pixels(digits):
    train, _ = digits
    with pytest.raises(ValueError, match="attack the raw data first, then preprocess"):
        attacks.backdoor(train.preprocess(lambda ds: ds.batch(2)), 0.3)
    other = ft.ClientData.from_arrays({"a": {"x": np.zeros((2, 3))}})
    with pytest.raises(ValueError, match=r"needs the fields 'label' and 'pixels'.*lacks \['label', 'pixels'\]"):
        attacks.flip_labels(other, 0.5)
    with pytest.raises(ValueError, match="poison_fraction must be a number in"):
        attacks.backdoor(train, 0.3, poison_fraction=0.0)
    with pytest.raises(ValueError, match="labels from 0 to 9, outside 0..4; pass num_classes"):
        attacks.flip_labels(train, 1.0, num_classes=5).client_arrays(train.client_ids[0])


def test_backdoor_test_data_triggers_every_non_target_example(digits):
    _, test = digits
    triggered = attacks.backdoor_test_data(test, target=3)
    total = 0
    for c in triggered.client_ids:
        original = test.client_arrays(c)
        arrays = triggered.client_arrays(c)
        keep = original["label"] != 3
        np.testing.assert_array_equal(arrays["pixels"], attacks.add_trigger(original["pixels"][keep]))
        assert np.all(arrays["label"] == 3)
        total += len(arrays["label"])
    assert total == sum(int((test.client_arrays(c)["label"] != 3).sum()) for c in test.client_ids)


def test_evaluate_backdoor_measures_the_attack_success_rate_and_clean_accuracy(digits):
    """The helper's numbers equal Keras' predictions on the triggered non-target examples and the clean ones."""
    train, test = digits
    poisoned = attacks.backdoor(train, 0.3, target=0, seed=0, poison_fraction=0.5)
    data = ft.make_federated_data(poisoned, train.client_ids, ft.preprocess_for_tutorial(num_epochs=3, seed=0))
    model_fn = model_fn_for(next(iter(data[0])))
    process, evaluation = ft.build_federated_averaging_process(model_fn), ft.build_federated_evaluation(model_fn)
    state = process.initialize()
    for _ in range(5):
        state, _ = process.next(state, data)
    preprocess = ft.preprocess_for_tutorial(num_epochs=1, batch_size=50, shuffle_buffer=0)
    result = attacks.evaluate_backdoor(evaluation, state.model, test, test.client_ids, preprocess, target=0)

    net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")])
    ft.assign_weights_to_keras_model(net, state.model)
    x = np.concatenate([test.client_arrays(c)["pixels"] for c in test.client_ids])
    y = np.concatenate([test.client_arrays(c)["label"] for c in test.client_ids])
    predict = lambda images: net.predict(images.reshape(-1, 784), verbose=0).argmax(axis=1)
    clean = (predict(x) == y).mean()
    triggered = x[y != 0].copy()
    triggered[:, 23:27, 23:27] = 0.0
    success = (predict(triggered) == 0).mean()
    assert result["clean_accuracy"] == pytest.approx(clean, abs=1e-6)
    assert result["attack_success"] == pytest.approx(success, abs=1e-6)
    assert success > 0.5 > (predict(x[y != 0]) == 0).mean()   # the backdoor works: without the trigger, few 0s
