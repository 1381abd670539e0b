"""The headless experiment engine: config validation, history, determinism, divergence."""
import numpy as np
import pytest

import fedteach as ft
from fedteach.experiment import Experiment, ExperimentConfig

FAST = ExperimentConfig(local_epochs=1, rounds=2, clients_per_round=2, eval_clients=4)


@pytest.fixture(scope='module')
def data():
    return ft.load_offline_digits(num_clients=8)


@pytest.mark.parametrize('changes, message', [
    ({'client_learning_rate': 0.0}, 'client_learning_rate must be a finite number > 0'),
    ({'client_learning_rate': -0.1}, 'client_learning_rate'),
    ({'server_learning_rate': float('nan')}, 'server_learning_rate'),
    ({'server_learning_rate': float('inf')}, 'server_learning_rate'),
    ({'batch_size': 0}, 'batch_size must be an integer >= 1'),
    ({'clients_per_round': 0}, 'clients_per_round'),
    ({'local_epochs': 0}, 'local_epochs'),
    ({'rounds': 0}, 'rounds'),
    ({'rounds': 2.5}, 'rounds'),
    ({'evaluate_every': 0}, 'evaluate_every'),
    ({'eval_clients': 0}, 'eval_clients'),
    ({'shuffle_buffer': -1}, 'shuffle_buffer must be an integer >= 0'),
    ({'seed': -1}, 'seed'),
    ({'batch_size': True}, 'batch_size'),
    ({'random_clients': 'yes'}, 'random_clients'),
    ({'model': 'resnet'}, "model must be one of"),
    ({'attack': 'poison'}, "attack must be None or one of"),
    ({'robust_aggregator': 'mode'}, "robust_aggregator must be None or one of"),
    ({'malicious_fraction': -0.1}, "malicious_fraction must be a number from 0 to 1"),
    ({'robust_aggregator': 'median', 'dp_noise_multiplier': 1.0}, "choose one"),
])
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig(**changes)
    with pytest.raises(ValueError, match=message):
        ExperimentConfig().replace(**changes)


def test_config_defaults_are_the_tutorials():
    config = ExperimentConfig()
    assert (config.clients_per_round, config.client_learning_rate, config.server_learning_rate,
            config.local_epochs, config.batch_size, config.shuffle_buffer, config.random_clients,
            config.model) == (3, 0.02, 1.0, 10, 20, 500, False, 'linear')


def test_too_many_clients_per_round(data):
    with pytest.raises(ValueError, match='only 8 clients'):
        Experiment(*data, FAST.replace(clients_per_round=9))


def _without_seconds(history):
    return [{k: v for k, v in entry.items() if k != 'seconds'} for entry in history]


def test_history_and_determinism(data):
    first = Experiment(*data, FAST, name='a')
    seen = []
    history = first.run(callback=seen.append)
    assert [e['round'] for e in history] == [1, 2] and seen == history and first.round_num == 2
    entry = history[-1]
    assert entry['run'] == 'a' and entry['clients'] == ['writer_000', 'writer_001']
    assert entry['num_examples'] == sum(data[0].num_examples(c) for c in entry['clients'])
    for key in ('train_loss', 'train_accuracy', 'eval_loss', 'eval_accuracy'):
        assert np.isfinite(entry[key]), key
    assert 0 <= entry['eval_accuracy'] <= 1 and entry['seconds'] > 0
    # fewer than 1,000 test examples exist: every test client but the two training clients
    assert first.eval_client_ids == data[1].client_ids[2:]
    assert entry['evaluated_on'] == first.evaluation_description

    second = Experiment(*data, FAST, name='a')
    assert _without_seconds(second.run()) == _without_seconds(history)

    first.reset()
    assert first.history == [] and first.round_num == 0
    assert _without_seconds(first.run()) == _without_seconds(history)


def test_evaluation_clients_and_their_description(data):
    test = data[1]
    examples = lambda ids: sum(test.num_examples(c) for c in ids)
    default = Experiment(*data, FAST)
    assert default.evaluation_description == (
        f'held-out test examples of 6 clients ({examples(test.client_ids[2:])} examples), '
        'none of them training clients')
    small = Experiment(*data, FAST, min_eval_examples=0)
    assert small.eval_client_ids == test.client_ids[2:6]
    with_training = Experiment(*data, FAST, min_eval_examples=0, eval_training_clients=True)
    assert with_training.eval_client_ids == test.client_ids[:4]
    assert with_training.evaluation_description.endswith(', 2 of them training clients (on their other examples)')
    sampled = Experiment(*data, FAST.replace(random_clients=True), min_eval_examples=0)
    assert sampled.eval_client_ids == test.client_ids[:4]
    assert 'training samples its clients from all 8, so these clients also train' in sampled.evaluation_description
    with pytest.raises(ValueError, match='min_eval_examples'):
        Experiment(*data, FAST, min_eval_examples=-1)


def test_evaluation_reaches_1000_test_examples_with_the_fewest_clients():
    train, test = ft.load_offline_digits()
    experiment = Experiment(train, test, ExperimentConfig())
    ids = experiment.eval_client_ids
    counts = [test.num_examples(c) for c in ids]
    assert sum(counts) >= 1000 > sum(counts[:-1])
    assert not set(ids) & set(train.client_ids[:3])
    assert experiment.evaluation_description == (
        f'held-out test examples of {len(ids)} clients ({sum(counts):,} examples), none of them training clients')


def test_settings_changes_reuse_the_compiled_functions(data):
    first = Experiment(*data, FAST)
    first.run_round()
    traces = sum(len(c.traces) for c in ft.rounds.fast._COMPILED.values())
    state = first.state
    for change in ({'client_learning_rate': 0.05}, {'server_learning_rate': 0.5}, {'seed': 4},
                   {'algorithm': 'fedprox', 'proximal_mu': 0.1}):
        experiment = Experiment(*data, FAST.replace(**change), initial_state=state)
        experiment.run_round()
        state = experiment.state
        assert sum(len(c.traces) for c in ft.rounds.fast._COMPILED.values()) == traces, change


def test_a_run_continuing_from_a_state_does_not_reseed_tensorflow(data, monkeypatch):
    """Seeding TensorFlow clears its kernel cache, so every compiled function (round, evaluation, Adam's
    server step) would be instantiated again: tens of milliseconds after each slider change. A run that
    continues from a state reuses an initialized model and has no weights to seed; a fresh run seeds."""
    first = Experiment(*data, FAST)  # the linear model of this data is built (and shared) from here on
    seeds = []
    monkeypatch.setattr(ft.rounds.process.keras.utils, 'set_random_seed', seeds.append)
    for change in ({'client_learning_rate': 0.05}, {'server_optimizer': 'adam'}, {'algorithm': 'fedsgd'}):
        Experiment(*data, FAST.replace(seed=7, **change), initial_state=first.state).run_round()
    assert seeds == []
    Experiment(*data, FAST.replace(seed=7))
    assert seeds == [7]


def test_not_reseeding_a_continuing_run_changes_none_of_its_metrics(data, monkeypatch):
    """A continuing run's weights come from the state and its draws from the config's seed: the same
    metrics as when the builders reseeded it (as before they stopped)."""
    first = Experiment(*data, FAST)
    first.run_round()
    change = FAST.replace(client_learning_rate=0.05, server_optimizer='adam', server_learning_rate=0.01,
                          random_clients=True, seed=2)
    continued = Experiment(*data, change, initial_state=first.state).run(rounds=2)
    switch = ft.rounds.process.model_already_initialized
    monkeypatch.setattr(ft.experiment, 'model_already_initialized', lambda active: switch(False))
    reseeded = Experiment(*data, change, initial_state=first.state).run(rounds=2)
    drop = lambda history: [{k: v for k, v in e.items() if k != 'seconds'} for e in history]
    assert drop(continued) == drop(reseeded)
    assert [e['round'] for e in continued] == [2, 3]


def test_continue_with_another_server_optimizer(data):
    first = Experiment(*data, FAST)
    first.run()
    adam = Experiment(*data, FAST.replace(server_optimizer='adam', server_learning_rate=0.01),
                      initial_state=first.state)
    assert adam.round_num == 2 and adam.state.model is first.state.model
    assert adam.run(rounds=1)[0]['round'] == 3


def test_random_clients_are_seeded_per_round(data):
    config = FAST.replace(random_clients=True, rounds=3, evaluate_every=2, seed=3)
    history = Experiment(*data, config).run()
    assert [e['clients'] for e in history] == [ft.sample_clients(data[0].client_ids, 2, r, seed=3)
                                               for r in (1, 2, 3)]
    # evaluation every 2nd round, and always after the last round of run()
    assert [e['eval_loss'] is not None for e in history] == [False, True, True]


def test_stop_then_continue_from_state_with_new_settings(data):
    first = Experiment(*data, FAST.replace(rounds=5))
    history = first.run(should_stop=lambda: len(first.history) >= 2)
    assert [e['round'] for e in history] == [1, 2]
    second = Experiment(*data, FAST.replace(client_learning_rate=0.05), initial_state=first.state)
    assert second.round_num == 2 and second.history == []
    assert second.run(rounds=1)[0]['round'] == 3
    second.reset()
    assert second.round_num == 2  # reset goes back to the initial_state
    with pytest.raises(ValueError, match='different model'):
        Experiment(*data, FAST.replace(model='cnn'), initial_state=first.state)


def test_divergence_keeps_last_good_round(data):
    good = Experiment(*data, FAST)
    good.run()
    huge = FAST.replace(client_learning_rate=1e20, server_learning_rate=1e20)
    bad = Experiment(*data, huge, initial_state=good.state)
    with pytest.raises(ft.DivergenceError, match='round 3 diverged'):
        bad.run()
    assert bad.history == [] and bad.state is good.state and bad.round_num == 2
    with pytest.raises(ft.DivergenceError):
        bad.run_round()  # still diverges from the same good state, and still keeps it
    assert bad.state is good.state
    good.run(rounds=1)  # the good run is unaffected
    assert [e['round'] for e in good.history] == [1, 2, 3]


def test_cnn_model_trains(data):
    config = FAST.replace(model='cnn', rounds=1, clients_per_round=1, eval_clients=1)
    entry = Experiment(*data, config).run()[0]
    assert np.isfinite(entry['train_loss']) and entry['eval_accuracy'] is not None


def test_an_exploding_loss_warns_once_naming_the_round_and_the_learning_rate():
    """A logits-based loss can grow to 1e10 with finite weights: no NaN, so the run warns instead."""
    import fedteach as ft
    train, test = ft.load_offline_digits(num_clients=12, seed=0)
    experiment = ft.Experiment(train, test, ft.ExperimentConfig(client_learning_rate=1e9, local_epochs=1, rounds=4))
    with pytest.warns(ft.experiment.ExplodingLossWarning, match=r"round 1: the training loss .* \(client 1e\+09"):
        experiment.run()
    assert sum('warning' in entry for entry in experiment.history) == 1


def test_malicious_clients_and_a_robust_aggregator(data):
    """Each round, 40% of 5 clients send -4x their update: FedAvg's loss explodes, the median's does not."""
    train, test = data
    attacked = FAST.replace(clients_per_round=5, rounds=4, attack='sign_flip', malicious_fraction=0.4)
    fedavg = Experiment(train, test, attacked).run()
    median = Experiment(train, test, attacked.replace(robust_aggregator='median')).run()
    assert [entry['malicious_clients'] for entry in median] == [2, 2, 2, 2]
    assert all(0 < entry['trimmed_fraction'] < 1 for entry in median)
    assert median[-1]['eval_loss'] < fedavg[-1]['eval_loss'] / 4
    assert attacked.replace(robust_aggregator='median').describe().endswith('sign_flip 40%, median')


def test_a_backdoor_experiment_measures_the_attack_success(data):
    train, test = data
    history = Experiment(train, test, FAST.replace(attack='backdoor', malicious_fraction=0.5)).run()
    assert all(0 <= entry['attack_success'] <= 1 for entry in history)
    flipped = Experiment(train, test, FAST.replace(attack='label_flip', malicious_fraction=1.0)).run()
    assert 'attack_success' not in flipped[0]
