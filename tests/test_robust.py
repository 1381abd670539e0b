"""Robust aggregators against the papers' definitions, written here again in plain NumPy and Python loops.

Yin et al. (2018), "Byzantine-Robust Distributed Learning": coordinate-wise median and trimmed mean.
Blanchard et al. (2017), "Machine Learning with Adversaries": Krum and Multi-Krum.
Sun et al. (2019), "Can You Really Backdoor Federated Learning?": norm bounding.
"""
import numpy as np
import pytest

import fedteach as ft
import numpy_fedavg
from test_attacks import model_fn_for  # the zero-initialised softmax regression, SGD 0.02
from fedteach import aggregators as agg
from fedteach import robust
from fedteach.aggregators import RoundContext

RNG = np.random.default_rng(1)
UPDATES = [RNG.normal(size=(8, 3, 2)), RNG.normal(size=(8, 4))]   # 8 clients, two variables
WEIGHTS = np.array([10.0, 1.0, 5.0, 4.0, 7.0, 2.0, 3.0, 6.0])


# --- The papers' definitions ----------------------------------------------------------------------------

def as_vectors(updates):
    """Each client's update as one vector (all variables, in order)."""
    return [np.concatenate([u[c].ravel() for u in updates]) for c in range(len(updates[0]))]


def as_variables(vector, updates):
    """A vector back into arrays shaped like one client's variables."""
    out, start = [], 0
    for u in updates:
        size = u[0].size
        out.append(vector[start:start + size].reshape(u.shape[1:]))
        start += size
    return out


def reference_median(updates):
    """Yin et al., Definition 1: coordinate j of the result is the median of the clients' coordinate j."""
    vectors = as_vectors(updates)
    n, d = len(vectors), len(vectors[0])
    result = np.empty(d)
    for j in range(d):
        values = sorted(v[j] for v in vectors)
        result[j] = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
    return as_variables(result, updates)


def reference_trimmed_mean(updates, beta):
    """Yin et al., Definition 2: per coordinate, remove the largest and smallest beta fraction, average the rest."""
    vectors = as_vectors(updates)
    n, d = len(vectors), len(vectors[0])
    k = int(beta * n + 1e-9)
    result = np.empty(d)
    for j in range(d):
        values = sorted(v[j] for v in vectors)
        kept = values[k:n - k]
        result[j] = sum(kept) / len(kept)
    return as_variables(result, updates)


def reference_krum_scores(updates, f):
    """Blanchard et al., Section 4: s(i) = sum of ||V_i - V_j||^2 over the n - f - 2 closest vectors V_j, j != i."""
    vectors = as_vectors(updates)
    n = len(vectors)
    scores = []
    for i in range(n):
        distances = sorted(float(np.sum((vectors[i] - vectors[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(distances[:n - f - 2]))
    return scores


def reference_krum(updates, f):
    scores = reference_krum_scores(updates, f)
    best = scores.index(min(scores))
    return as_variables(as_vectors(updates)[best], updates), best


def reference_multi_krum(updates, f, m):
    """Multi-Krum: the average of the m vectors with the best (lowest) scores."""
    scores = reference_krum_scores(updates, f)
    chosen = sorted(range(len(scores)), key=lambda i: scores[i])[:m]
    vectors = as_vectors(updates)
    return as_variables(sum(vectors[i] for i in chosen) / m, updates)


def reference_norm_bound(updates, weights, bound):
    """Sun et al., Section 3: Δ_c / max(1, ||Δ_c|| / M), then FedAvg's weighted mean."""
    vectors = [v / max(1.0, np.linalg.norm(v) / bound) for v in as_vectors(updates)]
    return as_variables(sum(w * v for w, v in zip(weights, vectors)) / sum(weights), updates)


CASES = [
    ("median", robust.median, lambda u, w: reference_median(u)),
    ("trimmed_mean(0.2)", lambda: robust.trimmed_mean(0.2), lambda u, w: reference_trimmed_mean(u, 0.2)),
    ("trimmed_mean(0.3)", lambda: robust.trimmed_mean(0.3), lambda u, w: reference_trimmed_mean(u, 0.3)),
    ("krum(1)", lambda: robust.krum(1), lambda u, w: reference_krum(u, 1)[0]),
    ("krum(2)", lambda: robust.krum(2), lambda u, w: reference_krum(u, 2)[0]),
    ("multi_krum(1, 3)", lambda: robust.multi_krum(1, 3), lambda u, w: reference_multi_krum(u, 1, 3)),
    ("norm_bound(1.5)", lambda: robust.norm_bound(1.5), lambda u, w: reference_norm_bound(u, w, 1.5)),
]


# --- Hand-made updates ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,make,reference", CASES, ids=[c[0] for c in CASES])
def test_each_aggregator_matches_its_papers_definition(name, make, reference):
    for clients in (8, 7):   # even and odd numbers of clients
        updates, weights = [u[:clients] for u in UPDATES], WEIGHTS[:clients]
        result, _ = make().aggregate(updates, weights, RoundContext(1, 0))
        for got, expected in zip(result, reference(updates, weights)):
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_krum_picks_the_honest_client_closest_to_the_others():
    honest = [[1.0, 1.0], [1.2, 0.9], [0.8, 1.1], [1.1, 1.2], [0.9, 0.8]]
    attackers = [[-10.0, -10.0], [-10.0, -9.9]]   # two colluding attackers, close to each other
    updates = [np.array(honest + attackers)]
    update, m = robust.krum(2).aggregate(updates, np.ones(7), RoundContext(1, 0))
    # With f = 2 each score sums n - f - 2 = 3 distances: an attacker's reach into the far honest cluster.
    assert m["selected_client"] == 0 and update[0].tolist() == [1.0, 1.0]
    assert m["discarded_clients"] == 6
    scores = robust.krum_scores(updates, 2)
    np.testing.assert_allclose(scores, reference_krum_scores(updates, 2))
    assert scores[:5].max() < scores[5:].min()


def test_one_huge_update_cannot_drag_the_robust_aggregators_outside_the_honest_range():
    honest = RNG.normal(size=(6, 5))
    updates = [np.vstack([honest, np.full((1, 5), -1e6)])]
    lo, hi = honest.min(axis=0), honest.max(axis=0)
    for aggregator in (robust.median(), robust.trimmed_mean(0.2), robust.krum(1), robust.multi_krum(1, 4)):
        update, _ = aggregator.aggregate(updates, np.ones(7), RoundContext(1, 0))
        assert np.all((lo <= update[0]) & (update[0] <= hi)), aggregator.name
    mean, _ = agg.unweighted_mean().aggregate(updates, np.ones(7), RoundContext(1, 0))
    assert np.all(mean[0] < -1e5)   # the plain mean follows the attacker


def test_each_reports_what_it_left_out():
    ctx = RoundContext(1, 0)
    assert robust.median().aggregate(UPDATES, WEIGHTS, ctx)[1] == {"trimmed_fraction": 6 / 8}
    assert robust.median().aggregate([u[:7] for u in UPDATES], WEIGHTS[:7], ctx)[1] == {"trimmed_fraction": 6 / 7}
    assert robust.trimmed_mean(0.3).aggregate(UPDATES, WEIGHTS, ctx)[1] == {"trimmed_fraction": 4 / 8}
    assert robust.trimmed_mean(0.1).aggregate(UPDATES, WEIGHTS, ctx)[1] == {"trimmed_fraction": 0.0}  # 0.8 -> 0
    _, best = reference_krum(UPDATES, 2)
    assert robust.krum(2).aggregate(UPDATES, WEIGHTS, ctx)[1] == {"selected_client": best, "discarded_clients": 7}
    assert robust.multi_krum(2, 4).aggregate(UPDATES, WEIGHTS, ctx)[1] == {"discarded_clients": 4}
    norms = np.linalg.norm(as_vectors(UPDATES), axis=1)
    m = robust.norm_bound(3.0).aggregate(UPDATES, WEIGHTS, ctx)[1]
    assert m["clipped_fraction"] == pytest.approx(np.mean(norms > 3.0)) and 0 < m["clipped_fraction"] < 1
    for aggregator in (robust.median(), robust.trimmed_mean(0.2), robust.krum(1), robust.multi_krum(1, 2),
                       robust.norm_bound(1.0)):
        assert set(aggregator.aggregate(UPDATES, WEIGHTS, ctx)[1]) == set(aggregator.measurement_names)
        assert aggregator.needs_clients


def test_multi_krum_spans_krum_and_the_mean():
    ctx = RoundContext(1, 0)
    one, _ = robust.multi_krum(2, 1).aggregate(UPDATES, WEIGHTS, ctx)
    krum, _ = robust.krum(2).aggregate(UPDATES, WEIGHTS, ctx)
    everyone, _ = robust.multi_krum(2, 8).aggregate(UPDATES, WEIGHTS, ctx)
    mean, _ = agg.unweighted_mean().aggregate(UPDATES, WEIGHTS, ctx)
    for a, b, c, d in zip(one, krum, everyone, mean):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(c, d)


def test_norm_bound_is_clip_then_the_weighted_mean():
    bound, _ = robust.norm_bound(1.0).aggregate(UPDATES, WEIGHTS, RoundContext(1, 0))
    chained, _ = agg.chain(agg.clip(1.0), agg.weighted_mean()).aggregate(UPDATES, WEIGHTS, RoundContext(1, 0))
    for a, b in zip(bound, chained):
        np.testing.assert_array_equal(a, b)
    assert robust.norm_bound(1.0).name == "norm_bound(1)"


def test_robust_aggregators_compose_with_chain():
    chained = agg.chain(agg.clip(1.0), robust.median())
    assert chained.name == "clip(1) -> median"
    assert chained.measurement_names == ("clipped_fraction", "mean_update_norm", "trimmed_fraction")
    update, m = chained.aggregate(UPDATES, WEIGHTS, RoundContext(1, 0))
    clipped, _, _ = agg.clip(1.0).transform(UPDATES, WEIGHTS, RoundContext(1, 0))
    for got, expected in zip(update, reference_median(clipped)):
        np.testing.assert_allclose(got, expected)
    with pytest.raises(ValueError, match="only the last stage"):
        agg.chain(robust.median(), agg.clip(1.0))


def test_float32_updates_stay_float32():
    updates = [u.astype(np.float32) for u in UPDATES]
    for aggregator in (robust.median(), robust.trimmed_mean(0.2), robust.krum(1), robust.multi_krum(1, 3)):
        update, _ = aggregator.aggregate(updates, WEIGHTS, RoundContext(1, 0))
        assert [u.dtype for u in update] == [np.float32, np.float32]


# --- Errors ---------------------------------------------------------------------------------------------

def test_krum_says_how_many_clients_it_needs():
    with pytest.raises(ValueError, match=r"krum\(f=2\) needs more than 2f \+ 2 = 6 clients in a round, and this "
                                         r"round had 5: sample at least 7 clients per round, or lower f to at most 1"):
        robust.krum(2).aggregate([np.zeros((5, 3))], np.ones(5), RoundContext(1, 0))
    with pytest.raises(ValueError, match="this round had 6"):
        robust.multi_krum(2, 3).aggregate([np.zeros((6, 3))], np.ones(6), RoundContext(1, 0))
    with pytest.raises(ValueError, match=r"multi_krum\(f=1, m=9\) averages 9 updates, but the round had only 5"):
        robust.multi_krum(1, 9).aggregate([np.zeros((5, 3))], np.ones(5), RoundContext(1, 0))


def test_trimmed_mean_always_keeps_a_client():
    """beta < 0.5 keeps n - 2 floor(beta n) >= 1 values: 0.49 of 1 client trims none, 0.4 of 5 keeps the middle."""
    one, _ = robust.trimmed_mean(0.49).aggregate([np.full((1, 3), 2.0)], np.ones(1), RoundContext(1, 0))
    middle, m = robust.trimmed_mean(0.4).aggregate([np.arange(5.0)[:, None]], np.ones(5), RoundContext(1, 0))
    assert one[0].tolist() == [2.0, 2.0, 2.0] and middle[0].tolist() == [2.0] and m["trimmed_fraction"] == 0.8


@pytest.mark.parametrize("aggregator", [robust.median(), robust.trimmed_mean(0.2)], ids=lambda a: a.name)
def test_a_round_without_clients_is_an_error(aggregator):
    with pytest.raises(ValueError, match="the round has no clients with examples"):
        aggregator.aggregate([np.zeros((0, 3))], np.ones(0), RoundContext(1, 0))


@pytest.mark.parametrize("make,message", [
    (lambda: robust.trimmed_mean(0.5), "beta must be a number from 0 to below 0.5"),
    (lambda: robust.trimmed_mean(-0.1), "beta"),
    (lambda: robust.krum(-1), "f, the number of malicious clients to tolerate, must be an integer >= 0"),
    (lambda: robust.krum(1.5), "must be an integer"),
    (lambda: robust.multi_krum(1, 0), "m, the number of updates averaged, must be an integer >= 1"),
    (lambda: robust.norm_bound(0.0), "clip_norm must be a finite number > 0"),
])
def test_bad_settings_are_refused_when_built(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --- Two rounds of a real process, against FedAvg's clients in NumPy and the definitions above ----------

LEARNING_RATE, BATCH_SIZE, EPOCHS = 0.02, 20, 1


@pytest.fixture(scope="module")
def clients():
    train, _ = ft.load_offline_digits(num_clients=7, seed=3, examples_per_client=40)
    ids = train.client_ids
    preprocess = ft.preprocess_for_tutorial(num_epochs=EPOCHS, batch_size=BATCH_SIZE, shuffle_buffer=0)
    data = ft.make_federated_data(train, ids, preprocess)
    arrays = [(train.client_arrays(c)["pixels"].reshape(-1, 784).astype(np.float64), train.client_arrays(c)["label"])
              for c in ids]
    return data, arrays


@pytest.mark.parametrize("name,make,reference", CASES, ids=[c[0] for c in CASES])
def test_two_rounds_of_fedavg_with_each_aggregator_match_numpy(clients, name, make, reference):
    data, arrays = clients
    process = ft.build_federated_averaging_process(model_fn_for(next(iter(data[0]))), aggregator=make())
    state = process.initialize()
    w, b = np.zeros((784, 10)), np.zeros(10)
    for _ in range(2):
        state, metrics = process.next(state, data)
        trained = [numpy_fedavg.client_update(w, b, x, y, LEARNING_RATE, BATCH_SIZE, EPOCHS) for x, y in arrays]
        updates = [np.stack([t[0] - w for t in trained]), np.stack([t[1] - b for t in trained])]
        examples = np.array([t[2] for t in trained], np.float64)
        dw, db = reference(updates, examples)
        w, b = w + dw, b + db   # the server's SGD with learning rate 1 adopts the update
        kernel, bias = state.model.trainable.values()
        np.testing.assert_allclose(kernel, w, atol=2e-5, err_msg=name)
        np.testing.assert_allclose(bias, b, atol=2e-5, err_msg=name)
    assert set(make().measurement_names) <= set(metrics)
    if name.startswith("krum"):
        assert metrics["selected_client"] == reference_krum(updates, int(name[5]))[1]


def test_the_general_engine_gives_the_fast_engines_robust_rounds(clients):
    data, _ = clients
    model_fn = model_fn_for(next(iter(data[0])))
    finals = {}
    for engine in ("fast", "general"):
        process = ft.build_federated_averaging_process(model_fn, engine=engine, aggregator=robust.trimmed_mean(0.2))
        state = process.initialize()
        for _ in range(2):
            state, metrics = process.next(state, data)
        assert process.path == engine and metrics["trimmed_fraction"] == pytest.approx(2 / 7)
        finals[engine] = state.model.trainable
    for name in finals["fast"]:
        np.testing.assert_allclose(finals["general"][name], finals["fast"][name], atol=1e-5)
