"""Aggregators against their definitions: means, clipping, DP noise and accounting, quantization."""
import math

import numpy as np
import pytest
from scipy import optimize, stats

from fedteach import aggregators as agg
from fedteach.aggregators import RoundContext

RNG = np.random.default_rng(0)
UPDATES = [RNG.normal(size=(4, 3, 2)), RNG.normal(size=(4, 5))]   # 4 clients, two variables
WEIGHTS = np.array([10.0, 1.0, 5.0, 4.0])


def test_weighted_and_unweighted_mean():
    weighted, _ = agg.weighted_mean().aggregate(UPDATES, WEIGHTS, RoundContext(1, 0))
    plain, _ = agg.unweighted_mean().aggregate(UPDATES, WEIGHTS, RoundContext(1, 0))
    for u, w, p in zip(UPDATES, weighted, plain):
        np.testing.assert_allclose(w, np.einsum("c,c...->...", WEIGHTS / WEIGHTS.sum(), u))
        np.testing.assert_allclose(p, u.mean(axis=0))
    assert not np.allclose(weighted[1], plain[1])
    assert agg.weighted_mean().needs_clients is False and agg.unweighted_mean().needs_clients is True


def norms(updates):
    return np.sqrt(sum((u.reshape(len(u), -1) ** 2).sum(axis=1) for u in updates))


@pytest.mark.parametrize("clip_norm", [0.5, 2.0, 100.0])
def test_clipping_respects_the_norm_and_keeps_directions(clip_norm):
    before = norms(UPDATES)
    clipped, _, m = agg.clip(clip_norm).transform(UPDATES, WEIGHTS, RoundContext(1, 0))
    after = norms(clipped)
    assert np.all(after <= clip_norm * (1 + 1e-9))
    np.testing.assert_allclose(after, np.minimum(before, clip_norm))
    for u, c in zip(UPDATES, clipped):  # same direction: c = u * (after / before)
        np.testing.assert_allclose(c, u * (after / before).reshape((-1,) + (1,) * (u.ndim - 1)))
    assert m["clipped_fraction"] == pytest.approx(np.mean(before > clip_norm))
    assert m["mean_update_norm"] == pytest.approx(before.mean())


def test_dp_noise_standard_deviation_matches_the_configuration():
    z, clip_norm, clients = 1.3, 0.7, 8
    zeros = [np.zeros((clients, 400, 50)), np.zeros((clients, 10_000))]   # 30,000 draws per round
    dp = agg.dp_mean(z, clip_norm, total_clients=80)
    noise = np.concatenate([np.concatenate([x.ravel() for x in dp.aggregate(zeros, np.ones(clients),
                                                                             RoundContext(r, 3))[0]])
                            for r in range(1, 6)])                          # 150,000 draws
    expected = z * clip_norm / clients
    # The sample std of N normal draws has relative standard error 1/sqrt(2N) ~ 0.18%: allow 1%.
    assert noise.std() == pytest.approx(expected, rel=0.01)
    assert abs(noise.mean()) < 5 * expected / math.sqrt(noise.size)
    assert stats.normaltest(noise[:20_000]).pvalue > 1e-4
    _, m = dp.aggregate(zeros, np.ones(clients), RoundContext(1, 3))
    assert m["noise_stddev"] == pytest.approx(expected)


def test_dp_noise_is_a_function_of_seed_and_round():
    dp = agg.dp_mean(1.0, 1.0)
    zeros = [np.zeros((2, 5))]
    a = dp.aggregate(zeros, np.ones(2), RoundContext(4, 1))[0][0]
    assert np.array_equal(a, dp.aggregate(zeros, np.ones(2), RoundContext(4, 1))[0][0])
    assert not np.array_equal(a, dp.aggregate(zeros, np.ones(2), RoundContext(5, 1))[0][0])
    assert not np.array_equal(a, dp.aggregate(zeros, np.ones(2), RoundContext(4, 2))[0][0])


def test_dp_mean_clips_then_takes_the_unweighted_mean():
    big = [np.stack([np.full(4, 10.0), np.full(4, 0.1)])]   # norms 20 and 0.2
    mean, m = agg.dp_mean(0.0, 1.0).aggregate(big, np.array([100.0, 1.0]), RoundContext(1, 0))
    np.testing.assert_allclose(mean[0], (np.full(4, 0.5) + np.full(4, 0.1)) / 2)
    assert m["clipped_fraction"] == 0.5 and m["epsilon"] == math.inf


def analytic_gaussian_delta(epsilon, sigma):
    """Exact delta(epsilon) of the Gaussian mechanism with sensitivity 1 (Balle & Wang, 2018, Thm. 8)."""
    return stats.norm.cdf(-epsilon * sigma + 1 / (2 * sigma)) - math.exp(epsilon) * stats.norm.cdf(
        -epsilon * sigma - 1 / (2 * sigma))


@pytest.mark.parametrize("z,rounds", [(1.0, 1), (2.0, 4), (5.0, 25)])
def test_epsilon_of_full_participation_equals_the_analytic_gaussian_mechanism(z, rounds):
    # T Gaussian mechanisms of noise z compose to one of noise z / sqrt(T): solve delta(eps) = 1e-5 exactly.
    sigma = z / math.sqrt(rounds)
    exact = optimize.brentq(lambda e: analytic_gaussian_delta(e, sigma) - 1e-5, 1e-6, 100)
    assert agg.dp_epsilon(z, 1.0, rounds, 1e-5, accountant="pld") == pytest.approx(exact, rel=0.01)
    rdp = agg.dp_epsilon(z, 1.0, rounds, 1e-5, accountant="rdp")
    assert exact <= rdp <= 1.5 * exact   # RDP's conversion is an upper bound, somewhat loose


def test_epsilon_with_sampling_matches_dp_accounting_used_directly():
    import dp_accounting
    from dp_accounting import pld, rdp

    q, z, rounds, delta = 0.02, 1.1, 500, 1e-5
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)
    for name, accountant in (("rdp", rdp.RdpAccountant()), ("pld", pld.PLDAccountant())):
        expected = accountant.compose(event).get_epsilon(delta)
        assert agg.dp_epsilon(z, q, rounds, delta, accountant=name) == pytest.approx(expected, rel=1e-9)
    # Sampling amplifies privacy: far smaller than without it, and growing with the rounds.
    assert agg.dp_epsilon(z, q, rounds) < agg.dp_epsilon(z, 1.0, rounds) / 10
    assert agg.dp_epsilon(z, q, 100) < agg.dp_epsilon(z, q, 200) < agg.dp_epsilon(z, q, 400)


def test_dp_mean_reports_the_accountants_epsilon_for_its_round():
    dp = agg.dp_mean(1.2, 1.0, total_clients=50, delta=1e-4)
    _, m = dp.aggregate([np.zeros((5, 3))], np.ones(5), RoundContext(7, 0))
    assert m["sampling_rate"] == pytest.approx(0.1)
    assert m["epsilon"] == pytest.approx(agg.dp_epsilon(1.2, 0.1, 7, 1e-4))


def test_noise_multiplier_for_a_target_epsilon():
    z = agg.noise_multiplier_for_epsilon(3.0, 0.05, 200)
    assert agg.dp_epsilon(z, 0.05, 200) == pytest.approx(3.0, rel=0.01)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quantization_error_is_bounded_per_element(bits):
    q, _, m = agg.quantize(bits).transform(UPDATES, WEIGHTS, RoundContext(1, 0))
    for u, v in zip(UPDATES, q):
        flat_u, flat_v = u.reshape(len(u), -1), v.reshape(len(v), -1)
        step = (flat_u.max(axis=1) - flat_u.min(axis=1)) / (2 ** bits - 1)
        assert np.all(np.abs(flat_v - flat_u) <= step[:, None] * (1 + 1e-9))
        levels = np.round((flat_v - flat_u.min(axis=1, keepdims=True)) / step[:, None])
        np.testing.assert_allclose(flat_v, flat_u.min(axis=1, keepdims=True) + levels * step[:, None], atol=1e-12)
        assert levels.min() >= 0 and levels.max() <= 2 ** bits - 1
    sizes = [6, 5]
    assert m["bytes_sent"] == 4 * sum(math.ceil(s * bits / 8) + 8 for s in sizes)
    assert m["bytes_uncompressed"] == 4 * 4 * sum(sizes)


def test_quantization_is_unbiased():
    x = [np.linspace(-1, 1, 101)[None]]
    draws = np.stack([agg.quantize(2).transform(x, np.ones(1), RoundContext(r, 0))[0][0][0]
                      for r in range(1, 2001)])
    step = 2 / 3
    # Each draw errs by at most `step`, so the mean of 2000 has standard error <= step / 2 / sqrt(2000).
    assert np.all(np.abs(draws.mean(axis=0) - x[0][0]) < 5 * (step / 2) / math.sqrt(2000))
    assert np.all(draws.std(axis=0) <= step / 2 + 1e-9)


def reference_quantize(updates, bits, context):
    """Quantization as defined, all clients of a variable at once, with the context's random numbers in order."""
    rng, levels, out = context.rng(), 2 ** bits - 1, []
    for u in updates:
        flat = u.reshape(len(u), -1).astype(np.float64)
        lo, hi = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
        step = (hi - lo) / levels
        with np.errstate(invalid="ignore"):
            t = (flat - lo) / np.where(step > 0, step, 1.0)
            low = np.floor(t)
            level = np.minimum(low + (rng.random(t.shape) < (t - low)), levels)
            out.append(np.where(step > 0, lo + level * step, flat).reshape(u.shape).astype(u.dtype))
    return out


@pytest.mark.parametrize("bits", [1, 8, 16])
def test_quantization_equals_its_definition_bit_for_bit(bits):
    # Computed client by client in reused buffers (fast for millions of numbers), it equals the definition
    # computed for all clients at once: same levels, same random numbers, same dtype; constant or non-finite
    # clients are sent as they are.
    updates = [RNG.normal(size=(3, 4, 5)).astype(np.float32), np.array([[1.0, 1.0], [np.nan, 2.0], [np.inf, 0.0]],
                                                                         np.float32), RNG.normal(size=(3, 7))]
    with np.errstate(invalid="ignore"):
        q, _, _ = agg.quantize(bits).transform(updates, np.ones(3), RoundContext(4, 2))
    for got, want in zip(q, reference_quantize(updates, bits, RoundContext(4, 2))):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_constant_update_is_sent_exactly():
    q, _, _ = agg.quantize(1).transform([np.full((2, 3), 0.25)], np.ones(2), RoundContext(1, 0))
    np.testing.assert_array_equal(q[0], np.full((2, 3), 0.25))


def test_chain_runs_transforms_then_one_reduction():
    chained = agg.chain(agg.clip(0.5), agg.quantize(16), agg.unweighted_mean())
    mean, m = chained.aggregate(UPDATES, WEIGHTS, RoundContext(1, 0))
    clipped, _, _ = agg.clip(0.5).transform(UPDATES, WEIGHTS, RoundContext(1, 0))
    for c, v in zip(clipped, mean):
        np.testing.assert_allclose(v, c.mean(axis=0), atol=1e-4)
    assert set(m) == {"clipped_fraction", "mean_update_norm", "bytes_sent", "bytes_uncompressed"}
    assert agg.chain(agg.clip(1.0)).name == "clip(1) -> weighted mean"
    with pytest.raises(ValueError, match="only the last stage"):
        agg.chain(agg.unweighted_mean(), agg.clip(1.0), agg.weighted_mean())
    with pytest.raises(TypeError, match="chain"):
        agg.chain(lambda u: u)


@pytest.mark.parametrize("make,message", [
    (lambda: agg.clip(0.0), "clip_norm"), (lambda: agg.quantize(0), "bits"), (lambda: agg.quantize(3.5), "bits"),
    (lambda: agg.dp_mean(-1.0, 1.0), "noise_multiplier"), (lambda: agg.dp_mean(1.0, -1.0), "clip_norm")])
def test_bad_settings_are_refused_with_a_clear_message(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_dp_mean_refuses_a_population_smaller_than_the_round():
    """A sampling rate above 1 is a mistake in total_clients, not a reason to report epsilon for q = 1."""
    dp = agg.dp_mean(noise_multiplier=1.0, clip_norm=1.0, total_clients=5)
    with pytest.raises(ValueError, match="a round has 10 clients but total_clients=5"):
        dp.aggregate([np.zeros((10, 3))], np.ones(10), RoundContext(1, 0))
