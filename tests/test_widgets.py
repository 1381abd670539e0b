"""Widgets driven from Python, without a browser: explorer, panel, dashboard."""
import base64
import pathlib
import time

import matplotlib

matplotlib.use('Agg')

import pytest  # noqa: E402

import fedteach as ft  # noqa: E402
from fedteach.experiment import ExperimentConfig  # noqa: E402
from fedteach.widgets import ClientExplorer, HyperparameterPanel, TrainingDashboard  # noqa: E402

FAST = ExperimentConfig(local_epochs=1, rounds=2, clients_per_round=2, eval_clients=3)


@pytest.fixture(scope='module')
def data():
    return ft.load_offline_digits(num_clients=8)


ARTIFACTS = pathlib.Path(__file__).resolve().parents[1] / 'artifacts'


def save_png(output, name):
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f'{name}.png').write_bytes(png_of(output))


def png_of(output):
    (only,) = output.outputs
    return base64.b64decode(only['data']['image/png'])


def test_explorer_redraws_on_select_and_dropdown(data):
    explorer = ClientExplorer(data[0])
    before = png_of(explorer.output)
    assert before.startswith(b'\x89PNG') and 'writer_000' in explorer.info.value
    explorer.select('writer_004')
    after = png_of(explorer.output)
    assert after != before and 'writer_004' in explorer.info.value
    assert explorer.figure.subfigs[0].get_suptitle().startswith('writer_004')
    explorer.dropdown.value = 'writer_005'
    assert png_of(explorer.output) != after and 'writer_005' in explorer.info.value
    save_png(explorer.output, 'widget_explorer')
    with pytest.raises(ValueError, match='unknown client'):
        explorer.select('nobody')


def test_panel_round_trips_every_field():
    panel = HyperparameterPanel()
    assert set(panel.widgets) == set(ExperimentConfig.__dataclass_fields__)
    assert panel.config == ExperimentConfig()  # no float noise from the log sliders
    config = ExperimentConfig(clients_per_round=4, client_learning_rate=0.1, server_learning_rate=0.5,
                              local_epochs=3, batch_size=32, rounds=7, seed=5, random_clients=True, model='cnn',
                              algorithm='fedprox', proximal_mu=0.1, server_optimizer='adam',
                              dp_noise_multiplier=0.7, dp_clip_norm=1.0, quantize_bits=4)
    panel.config = config
    assert panel.config == config
    panel.widgets['batch_size'].value = 0  # clamped by the bounded input
    assert panel.config.batch_size == 1


def test_dashboard_run_continue_restart(data):
    dashboard = TrainingDashboard(*data, FAST)
    assert len(dashboard.figure.axes[0].lines) == 0 and not dashboard.run_button.disabled
    dashboard.panel.widgets['clients_per_round'].value = 3
    dashboard.run_button.click()
    dashboard.wait()
    assert dashboard.error.value == '' and dashboard.last_error is None
    history = dashboard.controller.history
    assert [e['round'] for e in history] == [1, 2] and len(history[0]['clients']) == 3
    assert dashboard.progress.value == dashboard.progress.max == 2
    assert dashboard.round_label.value == 'round 2 / 2 of run 1 (model trained 2 rounds)'
    assert '<td>2</td>' in dashboard.metrics.value and 'Done' in dashboard.status.value
    assert not dashboard.run_button.disabled and dashboard.stop_button.disabled
    assert png_of(dashboard.plot_output).startswith(b'\x89PNG')

    # same settings, continue: the same run goes on
    dashboard.run(block=True)
    assert [e['round'] for e in dashboard.controller.history] == [1, 2, 3, 4]
    assert len(dashboard.controller.experiments) == 1

    # new settings, continue: a new run from round 4
    dashboard.panel.widgets['client_learning_rate'].value = 0.05
    dashboard.panel.widgets['rounds'].value = 1
    dashboard.run(block=True)
    run2 = dashboard.controller.experiment
    assert run2.name == 'run 2 (lr=0.05, 3 clients, 1 epoch, from round 4)'
    assert run2.history[0]['round'] == 5 and dashboard.progress.max == 1

    # restart: fresh weights
    dashboard.mode.value = 'restart'
    dashboard.run(block=True)
    run3 = dashboard.controller.experiment
    assert run3.name.startswith('run 3 (') and run3.history[0]['round'] == 1
    labels = [line.get_label() for line in dashboard.figure.axes[0].lines if line.get_label() != '_nolegend_']
    assert len(labels) == 6 and sum(label.startswith('run 3') for label in labels) == 2
    assert len(dashboard.figure.legends[0].get_texts()) == 6
    save_png(dashboard.plot_output, 'widget_dashboard')

    dashboard.reset_button.click()
    assert dashboard.controller.history == [] and len(dashboard.figure.axes[0].lines) == 0
    assert dashboard.round_label.value == 'no rounds yet'


def test_dashboard_stop_diverge_and_recover(data):
    dashboard = TrainingDashboard(*data, FAST.replace(rounds=100))
    dashboard.run(block=False)
    assert dashboard.run_button.disabled and not dashboard.stop_button.disabled
    deadline = time.time() + 60
    while not dashboard.controller.history and time.time() < deadline:
        time.sleep(0.05)
    dashboard.stop_button.click()
    dashboard.wait(timeout=60)
    assert not dashboard.running
    done = len(dashboard.controller.history)
    assert 1 <= done < 100 and dashboard.controller.experiment.round_num == done
    assert dashboard.progress.value == done and 'Stopped after round' in dashboard.status.value
    assert not dashboard.run_button.disabled and dashboard.stop_button.disabled
    good = dashboard.controller.experiment.state

    # a huge learning rate diverges at once: a friendly message, the last good state kept
    dashboard.panel.widgets['rounds'].value = 1
    for name in ('client_learning_rate', 'server_learning_rate'):
        slider = dashboard.panel.widgets[name]
        slider.max = 25
        slider.value = 1e20
    dashboard.run(block=True)
    assert isinstance(dashboard.last_error, ft.DivergenceError)
    assert 'Training diverged' in dashboard.error.value and f'round {done + 1}' in dashboard.error.value
    assert dashboard.progress.bar_style == 'danger' and not dashboard.run_button.disabled
    assert [e['round'] for e in dashboard.controller.history] == list(range(1, done + 1))
    assert dashboard.controller.experiment.state is good

    # lower the learning rates and Run again: training goes on from the last good model
    dashboard.panel.widgets['client_learning_rate'].value = 0.02
    dashboard.panel.widgets['server_learning_rate'].value = 1.0
    dashboard.run(block=True)
    assert dashboard.error.value == '' and 'Done' in dashboard.status.value
    assert [e['round'] for e in dashboard.controller.history] == list(range(1, done + 2))

    # an invalid setting is shown, not raised, and nothing runs
    dashboard.panel.widgets['clients_per_round'].max = 50
    dashboard.panel.widgets['clients_per_round'].value = 50
    dashboard.run(block=True)
    assert 'only 8 clients' in dashboard.error.value and not dashboard.run_button.disabled
    assert len(dashboard.controller.history) == done + 1
