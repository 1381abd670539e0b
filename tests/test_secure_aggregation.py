"""Secure aggregation (Bonawitz et al. 2017): the server learns the exact sum and nothing about one update."""
import keras
import numpy as np
import pytest
from scipy import stats

import fedteach as ft
from fedteach import secure_aggregation as sa
from fedteach.aggregators import RoundContext, chain, clip, unweighted_mean

RNG = np.random.default_rng(0)
UPDATES = RNG.normal(0.0, 0.3, size=(5, 200))   # 5 clients, 200 numbers each


def test_fixed_point_round_trip_and_range_error():
    q = sa.quantize(UPDATES, scale=2 ** 20, modulus_bits=32)
    assert q.dtype == np.uint64 and q.max() < 2 ** 32
    np.testing.assert_allclose(sa.dequantize(q, 2 ** 20, 32), UPDATES, atol=0.5 / 2 ** 20)
    with pytest.raises(ValueError, match="beyond the 8-bit range"):
        sa.quantize([1.0], scale=200, modulus_bits=8)


def test_any_threshold_shares_rebuild_a_secret_fewer_do_not():
    shares = sa.shamir_shares(123456789, num_shares=5, threshold=3, rng=np.random.default_rng(1))
    for holders in ([0, 1, 2], [1, 3, 4], [0, 2, 4], [0, 1, 2, 3, 4]):
        assert sa.rebuild_secret({h: shares[h] for h in holders}) == 123456789
    assert sa.rebuild_secret({0: shares[0], 4: shares[4]}) != 123456789


def test_pairwise_seeds_agree_and_pairwise_masks_cancel_in_the_modular_sum():
    keys = sa.generate_keys(4, seed=2)
    public = [k.public_key for k in keys]
    assert sa._pair_seed(keys[0].secret_key, public[3]) == sa._pair_seed(keys[3].secret_key, public[0])
    q = sa.quantize(UPDATES[:4], scale=2 ** 16, modulus_bits=32)
    masked = [sa.mask(u, q[u], keys[u], public, 32, self_mask=False) for u in range(4)]
    assert all(not np.array_equal(m.values, q[m.client]) for m in masked)
    total = sum(m.values for m in masked) % 2 ** 32   # nothing removed: the pairwise masks cancel by themselves
    np.testing.assert_array_equal(total, q.sum(axis=0) % 2 ** 32)


@pytest.mark.parametrize("modulus_bits", [16, 32, 63])
@pytest.mark.parametrize("dropped", [(), (1,), (0, 4)])
@pytest.mark.parametrize("self_mask", [True, False])
def test_the_modular_sum_is_exactly_the_survivors_sum(modulus_bits, dropped, self_mask):
    scale = (2 ** (modulus_bits - 1) - 1) / (5 * 2.0)
    q = sa.quantize(np.clip(UPDATES, -2.0, 2.0), scale, modulus_bits)
    view, total = sa.simulate(q, modulus_bits, dropped=dropped, self_mask=self_mask, seed=7)
    survivors = [u for u in range(5) if u not in dropped]
    assert sorted(view) == survivors
    expected = [sum(int(x) for x in column) % 2 ** modulus_bits for column in q[survivors].T]  # Python integers
    assert [int(t) for t in total] == expected
    np.testing.assert_allclose(sa.dequantize(total, scale, modulus_bits), UPDATES[survivors].sum(axis=0),
                               atol=len(survivors) / scale)


def test_too_few_survivors_abort_the_round():
    q = sa.quantize(UPDATES, 2 ** 10, 32)
    with pytest.raises(ValueError, match="2 of 5 clients survived, fewer than the threshold 3"):
        sa.simulate(q, 32, dropped=(0, 1, 2))


def test_a_masked_update_is_uniform_and_independent_of_the_update():
    """Whatever the update (all zeros or a large pattern), the server's view of it is uniform over Z_m."""
    d, m = 20000, 2 ** 32
    pattern = np.linspace(-1.0, 1.0, d) ** 3
    views = {}
    for name, update in (("zeros", np.zeros(d)), ("pattern", pattern)):
        q = sa.quantize(np.stack([update, -update, np.zeros(d)]), 2 ** 20, 32)
        view, _ = sa.simulate(q, 32, seed=11)
        views[name] = view[0].values.astype(np.float64) / m   # client 0's masked vector, scaled to [0, 1)
    for name, v in views.items():
        counts = np.bincount((v * 16).astype(int), minlength=16)
        assert stats.chisquare(counts).pvalue > 1e-3, name
        assert stats.kstest(v, "uniform").pvalue > 1e-3, name
    assert stats.ks_2samp(views["zeros"], views["pattern"]).pvalue > 1e-3
    assert abs(np.corrcoef(pattern, views["pattern"])[0, 1]) < 4 / np.sqrt(d)
    # and over many runs of the protocol, one number's masked value does not follow the number
    values = np.linspace(-1.0, 1.0, 400)
    masked = [sa.simulate(sa.quantize([[x], [0.0]], 2 ** 20, 32), 32, seed=s)[0][0].values[0] / m
              for s, x in enumerate(values)]
    assert abs(np.corrcoef(values, masked)[0, 1]) < 4 / np.sqrt(len(values))


def test_secure_mean_is_the_survivors_mean_and_records_only_masked_vectors():
    updates = [UPDATES[:, :150].reshape(5, 15, 10), UPDATES[:, 150:]]
    seen = []
    agg = sa.secure_mean(clip_value=1.0, dropout=0.3, server_view=seen)
    mean, m = agg.aggregate(updates, np.ones(5), RoundContext(round_num=2, seed=0))
    round_view = seen[0]
    survivors = sorted(round_view["masked"])
    assert m["dropped_clients"] == len(round_view["dropped"]) == 5 - len(survivors) > 0
    clipped = [np.clip(u[survivors], -1.0, 1.0).mean(axis=0) for u in updates]
    for got, want in zip(mean, clipped):
        np.testing.assert_allclose(got, want, atol=m["quantization_step"])
    assert m["clipped_fraction"] == pytest.approx(np.mean(np.abs(UPDATES) > 1.0))
    assert m["bytes_sent"] == len(survivors) * 200 * 4
    again = []
    sa.secure_mean(clip_value=1.0, dropout=0.3, server_view=again).aggregate(updates, np.ones(5), RoundContext(2, 0))
    for c in survivors:   # the same seed and round: the same keys, masks and dropouts
        np.testing.assert_array_equal(again[0]["masked"][c], round_view["masked"][c])


def test_a_diverged_client_makes_the_secure_mean_nan_not_a_wrapped_integer():
    updates = [np.array([[0.1, np.nan], [0.2, 0.3]])]
    mean, _ = sa.secure_mean().aggregate(updates, np.ones(2), RoundContext(1, 0))
    assert np.all(np.isnan(mean[0]))


def test_secure_mean_refuses_a_single_client():
    with pytest.raises(ValueError, match="at least 2 clients"):
        sa.secure_mean().aggregate([np.ones((1, 3))], np.ones(1), RoundContext(1, 0))


def test_a_process_trains_with_secure_aggregation_as_with_the_plain_mean():
    train, _ = ft.load_offline_digits(num_clients=3, seed=0)
    data = ft.make_federated_data(train, train.client_ids, ft.preprocess_for_tutorial(num_epochs=1, seed=0))

    def model_fn():
        net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax",
                                                                        kernel_initializer="zeros")])
        net.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(0.02))
        return ft.from_compiled_keras_model(net, next(iter(data[0])))

    seen = []
    states = {}
    for name, aggregator in (("plain", chain(clip(10.0), unweighted_mean())),
                             ("secure", chain(clip(10.0), sa.secure_mean(clip_value=1.0, server_view=seen)))):
        process = ft.build_federated_averaging_process(model_fn, aggregator=aggregator)
        state = process.initialize()
        for _ in range(2):
            state, metrics = process.next(state, data)
        states[name] = state
    assert metrics["dropped_clients"] == 0 and metrics["quantization_step"] < 1e-8
    for name in states["plain"].model.trainable:
        np.testing.assert_allclose(states["secure"].model.trainable[name], states["plain"].model.trainable[name],
                                   atol=1e-6)
    assert [v["round"] for v in seen] == [1, 2] and all(v["masked"][0].dtype == np.uint64 for v in seen)
