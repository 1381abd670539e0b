"""Widgets driven from Python, without a browser: explorer, panel, dashboard."""
import base64
import contextvars
import pathlib
import time

import matplotlib

matplotlib.use('Agg')

import ipywidgets  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from ipywidgets.widgets.widget_description import DescriptionWidget  # noqa: E402
import pytest  # noqa: E402

import fedteach as ft  # noqa: E402
from fedteach.experiment import ExperimentConfig  # noqa: E402
from fedteach.widgets import BASIC_FIELDS, ClientExplorer, HyperparameterPanel, TrainingDashboard  # noqa: E402
from fedteach.widgets.panel import LogFloatInput  # noqa: E402
from fedteach.rounds.fast import FastTrainer  # noqa: E402

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


def test_explorer_reads_without_a_kernel(data):
    """The explorer's display data holds a static picture, and snapshot() is the figure as an output."""
    explorer = ClientExplorer(data[0])
    explorer.select('writer_003')
    bundle = explorer._repr_mimebundle_()
    assert 'application/vnd.jupyter.widget-view+json' in bundle
    assert bundle['text/plain'] == 'Client explorer: writer_003'
    assert 'data:image/png;base64,' in bundle['text/html'] and 'writer_003' in bundle['text/html']
    snapshot = explorer.snapshot()
    (figure,) = snapshot.outputs()
    assert base64.b64decode(figure['image/png']) == snapshot.png and snapshot.png.startswith(b'\x89PNG')
    assert repr(snapshot).startswith('writer_003: ') and 'different labels' in repr(snapshot)


def all_widgets(widget):
    yield widget
    for child in getattr(widget, 'children', ()):
        yield from all_widgets(child)


def test_panel_shows_what_notebook_3_taught_by_default():
    config = ExperimentConfig(server_learning_rate=0.5, proximal_mu=0.1, algorithm='fedprox')
    basic = HyperparameterPanel(config)
    assert tuple(basic.widgets) == BASIC_FIELDS
    labels = {getattr(w, 'description', '') for w in all_widgets(basic.widget)}
    assert 'server learning rate' not in labels and 'FedProx mu' not in labels
    basic.widgets['local_epochs'].value = 2
    assert basic.config == config.replace(local_epochs=2)  # hidden fields keep the given values
    full = HyperparameterPanel(config, controls='all')
    assert set(full.widgets) == set(ExperimentConfig.__dataclass_fields__)
    (folded,) = [w for w in all_widgets(full.widget) if w.__class__.__name__ == 'Accordion']
    assert folded.selected_index is None and 'privacy' in folded.titles[0]
    with pytest.raises(ValueError, match="controls must be 'basic'"):
        HyperparameterPanel(controls='advanced')


def test_every_widget_has_a_tooltip(data):
    """ipywidgets 8 writes an unset tooltip of a labelled widget or a button into the DOM as title="null"."""
    dashboard = TrainingDashboard(*data, FAST, controls='all')
    missing = [repr(w)[:60] for w in all_widgets(dashboard.widget)
               if isinstance(w, (DescriptionWidget, ipywidgets.Button)) and w.tooltip is None]
    assert missing == []
    described = [w for w in all_widgets(dashboard.widget) if getattr(w, 'description', '')]
    assert all(w.tooltip for w in described), [w.description for w in described if not w.tooltip]


def test_learning_rate_is_a_log_slider_that_takes_typed_values():
    rate = LogFloatInput(0.02, 'client learning rate', -4, 1, tooltip='lr')
    assert rate.slider.readout is False and rate.box.value == 0.02
    rate.slider.value = 10 ** -1.3  # dragged: two significant digits, as the status line prints it
    assert rate.value == 0.05
    rate.value = 0.0123  # typed: exact, the slider follows
    assert rate.value == 0.0123 and rate.slider.value == pytest.approx(0.0123)
    rate.value = 500.0  # beyond the slider: its range grows
    assert rate.slider.max == 3 and rate.slider.value == pytest.approx(500.0) and rate.value == 500.0
    panel = HyperparameterPanel()
    panel.widgets['client_learning_rate'].value = 0.0123
    assert panel.config.client_learning_rate == 0.0123


def test_panel_round_trips_every_field():
    panel = HyperparameterPanel(controls='all')
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
    dashboard = TrainingDashboard(*data, FAST, controls='all')
    assert len(dashboard.figure.axes[0].lines) == 0 and not dashboard.run_button.disabled
    dashboard.panel.widgets['clients_per_round'].value = 3
    dashboard.run_button.click()
    dashboard.wait()
    assert dashboard.error.value == '' and dashboard.last_error is None
    history = dashboard.controller.history
    assert [e['round'] for e in history] == [1, 2] and len(history[0]['clients']) == 3
    assert dashboard.progress.value == dashboard.progress.max == 2
    assert dashboard.round_label.value == 'round 2 / 2 of run 1 (model trained 2 rounds)'
    assert '<td>2</td>' in dashboard.metrics.value
    assert dashboard.status.value == 'Done: run 1 (lr=0.02, 3 clients, 1 epoch) trained 2 rounds.'
    assert not dashboard.run_button.disabled and dashboard.stop_button.disabled
    assert png_of(dashboard.plot_output).startswith(b'\x89PNG')

    # same settings, continue: the same run goes on
    dashboard.run(block=True)
    assert [e['round'] for e in dashboard.controller.history] == [1, 2, 3, 4]
    assert len(dashboard.controller.experiments) == 1

    # only "rounds per Run" changed: still the same run, no new legend entry
    dashboard.panel.widgets['rounds'].value = 1
    dashboard.run(block=True)
    assert [e['round'] for e in dashboard.controller.history] == [1, 2, 3, 4, 5]
    assert len(dashboard.controller.experiments) == 1 and len(dashboard.figure.legends[0].get_texts()) == 1
    assert dashboard.round_label.value == 'round 1 / 1 of run 1 (model trained 5 rounds)'

    # new settings, continue: a new run from round 5, and the status line says why
    dashboard.panel.widgets['client_learning_rate'].value = 0.05
    dashboard.run(block=True)
    run2 = dashboard.controller.experiment
    assert run2.name == 'run 2 (lr=0.05, 3 clients, 1 epoch, from round 5)'
    assert run2.history[0]['round'] == 6 and dashboard.progress.max == 1
    assert dashboard.status.value == ('New run 2: client learning rate 0.02 → 0.05; it continues from the model '
                                      'after round 5. Done: run 2 (lr=0.05, 3 clients, 1 epoch, from round 5) '
                                      'trained 1 rounds.')

    # restart: fresh weights
    dashboard.mode.value = 'restart'
    dashboard.run(block=True)
    run3 = dashboard.controller.experiment
    assert run3.name.startswith('run 3 (') and run3.history[0]['round'] == 1
    assert 'Restart: it starts from fresh weights' in dashboard.status.value
    labels = [line.get_label() for line in dashboard.figure.axes[0].lines if line.get_label() != '_nolegend_']
    assert len(labels) == 6 and sum(label.startswith('run 3') for label in labels) == 2
    legend = [text.get_text() for text in dashboard.figure.legends[0].get_texts()]  # one entry per run
    assert legend == ['run 1 (lr=0.02, 3 clients, 1 epoch)', 'run 2 (lr=0.05, 3 clients, 1 epoch)',
                      'run 3 (lr=0.05, 3 clients, 1 epoch)']
    save_png(dashboard.plot_output, 'widget_dashboard')

    dashboard.reset_button.click()
    assert dashboard.controller.history == [] and len(dashboard.figure.axes[0].lines) == 0
    assert dashboard.round_label.value == 'no rounds yet'


def test_dashboard_legend_stays_readable_with_five_runs(data):
    dashboard = TrainingDashboard(*data, FAST.replace(rounds=1))
    for rate in (0.01, 0.02, 0.03, 0.05, 0.08):
        dashboard.panel.widgets['client_learning_rate'].value = rate
        dashboard.run(block=True)
    legend = dashboard.figure.legends[0]
    assert len(legend.get_texts()) == 5 and legend._ncols == 2
    canvas = FigureCanvasAgg(dashboard.figure)
    canvas.draw()  # lays the figure out as the PNG shows it
    renderer = canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= dashboard.figure.bbox.width  # inside the figure, not clipped
    for ax in dashboard.figure.axes:  # and not over the plots
        assert not box.overlaps(ax.get_window_extent(renderer))
    save_png(dashboard.plot_output, 'widget_dashboard_five_runs')


def test_dashboard_run_block_returns_a_static_snapshot(data):
    dashboard = TrainingDashboard(*data, FAST)
    before = dashboard._repr_mimebundle_()['text/html']  # displayed before training: a sentence, no empty plot
    assert 'Training dashboard: no rounds yet' in before and '<img' not in before
    snapshot = dashboard.run(block=True)
    assert repr(snapshot) == 'round 2 / 2 of run 1 (model trained 2 rounds)'
    figure, table = snapshot.outputs()
    assert base64.b64decode(figure['image/png']).startswith(b'\x89PNG')
    assert 'Done: run 1' in table['text/html'] and '<td>2</td>' in table['text/html']
    bundle = dashboard._repr_mimebundle_()
    assert bundle['text/plain'] == 'Training dashboard: round 2 / 2 of run 1 (model trained 2 rounds)'
    assert 'VBox' not in bundle['text/plain'] and 'data:image/png;base64,' in bundle['text/html']
    assert dashboard.run(block=False) is None
    dashboard.wait()


def test_worker_thread_keeps_the_callers_context(data, monkeypatch):
    """ipykernel 7.0 reads the parent message from a ContextVar: widget updates from the thread need it."""
    parent = contextvars.ContextVar('shell_parent')
    parent.set({'header': {'msg_id': 'the Run click'}})
    seen = []
    dashboard = TrainingDashboard(*data, FAST.replace(rounds=1))
    show_round = dashboard._show_round
    monkeypatch.setattr(dashboard, '_show_round', lambda: (seen.append(parent.get()), show_round()))
    dashboard.run(block=True)
    assert dashboard.last_error is None and seen == [{'header': {'msg_id': 'the Run click'}}]


def test_dashboard_stop_then_run_resumes_the_counter(data):
    dashboard = TrainingDashboard(*data, FAST.replace(rounds=12))
    dashboard.run(block=False)
    deadline = time.time() + 120
    while len(dashboard.controller.history) < 2 and time.time() < deadline:
        time.sleep(0.02)
    dashboard.stop()
    dashboard.wait(timeout=120)
    done = dashboard.controller.rounds_done
    assert 2 <= done < 12 and dashboard.round_label.value == f'round {done} / 12 of run 1 (model trained {done} rounds)'
    assert dashboard.status.value == f'Stopped after round {done} ({done} of 12). Press Run to continue.'
    dashboard.run(block=True)  # resumes: the remaining rounds, in the same run
    assert [e['round'] for e in dashboard.controller.history] == list(range(1, 13))
    assert dashboard.round_label.value == 'round 12 / 12 of run 1 (model trained 12 rounds)'
    assert len(dashboard.controller.experiments) == 1 and dashboard.progress.value == dashboard.progress.max == 12


def test_dashboard_stop_diverge_and_recover(data):
    dashboard = TrainingDashboard(*data, FAST.replace(rounds=100), controls='all')
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
        dashboard.panel.widgets[name].value = 1e20  # typed
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


def test_controller_resumes_a_stopped_run_unless_rounds_per_run_changed(data):
    from fedteach.widgets import TrainingController
    controller = TrainingController(*data)
    controller.prepare(FAST.replace(rounds=5))
    controller.run(callback=lambda entry: entry['round'] == 2 and controller.stop())
    assert (controller.rounds_done, controller.rounds_total, controller.unfinished) == (2, 5, True)
    controller.prepare(FAST.replace(rounds=5))  # Run again, same settings: the rest of the Run
    assert controller.note == f'{controller.experiment.name} resumes its Run at round 3 of 5.'
    controller.run(callback=lambda entry: entry['round'] == 3 and controller.stop())
    controller.prepare(FAST.replace(rounds=4))  # stopped again, then a new number of rounds: a new Run
    assert (controller.rounds_done, controller.rounds_total) == (0, 4) and not controller.new_run
    assert controller.note == f'{controller.experiment.name} continues from round 3.'
    assert [e['round'] for e in controller.run()] == [1, 2, 3, 4, 5, 6, 7]
    assert len(controller.experiments) == 1


def compiled_traces():
    return sum(len(compiled.traces) for compiled in ft.rounds.fast._COMPILED.values())


def test_a_settings_change_compiles_in_the_background_before_run(data):
    from fedteach.widgets import TrainingController
    warmed, cold = TrainingController(*data), TrainingController(*data)
    for controller in (warmed, cold):
        controller.prepare(FAST)
        controller.run()
    changed = FAST.replace(clients_per_round=7, batch_size=11)  # a client count and batch no test uses elsewhere
    assert warmed.warm_up(FAST.replace(rounds=9)) is None  # only the rounds: the same run, nothing to compile
    warmed.warm_up(changed).join()
    assert warmed.warm_up_error is None
    assert (len(warmed.experiments), warmed.experiment.round_num) == (1, 2)  # the warm-up's round left no trace
    before = compiled_traces()
    warmed.prepare(changed)
    history = warmed.run()
    assert compiled_traces() == before  # Run found the round and evaluation compiled
    cold.prepare(changed)
    assert [e['train_loss'] for e in cold.run()] == [e['train_loss'] for e in history]  # same numbers


def test_a_warm_up_compiles_the_last_of_settings_changed_in_a_row(data):
    """Stepping a slider 4 -> 5 -> 6 with the arrow keys compiles for 6 only: a compilation cannot be stopped."""
    from fedteach.widgets import TrainingController
    controller = TrainingController(*data)
    controller.prepare(FAST)
    controller.run()
    for clients in (4, 5, 6):  # a batch size no other test uses: these client counts are new shapes
        thread = controller.warm_up(FAST.replace(clients_per_round=clients, batch_size=13))
    thread.join()
    rounds = [key[2] for compiled in ft.rounds.fast._COMPILED.values() if isinstance(compiled.owner, FastTrainer)
              for key in compiled.traces]  # the index shapes (clients, steps, batch) of the compiled rounds
    assert {clients for clients, _, batch in rounds if batch == 13} == {6}


def test_run_drops_a_warm_up_that_has_not_started(data, monkeypatch):
    """Run right after a change: the run compiles what it needs; a warm-up would only make it wait."""
    from fedteach.widgets import TrainingController, controller as module
    built, real = [], module.Experiment
    monkeypatch.setattr(module, 'Experiment', lambda *a, **k: built.append(k.get('name')) or real(*a, **k))
    controller = TrainingController(*data)
    changed = FAST.replace(seed=3)
    thread = controller.warm_up(changed)
    controller.prepare(changed)  # within the settling delay
    thread.join()
    assert len(built) == 1 and built[0].startswith('run 1')  # only the run's own Experiment was built
    assert [e['round'] for e in controller.run()] == [1, 2]


def test_a_failed_warm_up_is_kept_not_raised(data):
    from fedteach.widgets import TrainingController
    controller = TrainingController(*data)
    controller.warm_up(FAST.replace(clients_per_round=99)).join()  # more clients than the 8 of the data
    assert controller.warm_up_error.startswith('ValueError: clients_per_round=99')


def test_the_plot_is_drawn_after_a_runs_first_and_last_round_and_at_most_every_interval(data, monkeypatch):
    """Drawing takes ~0.14 s and a linear round ~0.01 s: redrawing every round made a Run mostly plotting."""
    from fedteach.widgets import dashboard as module
    dashboard = TrainingDashboard(*data, config=FAST.replace(rounds=5))
    drawn, redraw, show_round = [], dashboard._redraw, dashboard._show_round
    monkeypatch.setattr(dashboard, '_redraw', lambda: (drawn.append(dashboard.controller.rounds_done), redraw()))
    monkeypatch.setattr(module, 'REDRAW_INTERVAL', 3600)
    dashboard.run(block=True)
    assert drawn == [1, 5]
    assert [len(line.get_xdata()) for line in dashboard.figure.axes[0].lines] == [5, 5]  # every round is on it
    monkeypatch.setattr(module, 'REDRAW_INTERVAL', 0)
    drawn.clear()
    dashboard.run(block=True)  # the same run, five more rounds
    assert drawn == [1, 2, 3, 4, 5]
    monkeypatch.setattr(module, 'REDRAW_INTERVAL', 3600)
    monkeypatch.setattr(dashboard, '_show_round', lambda: (show_round(), dashboard.controller.rounds_done == 3
                                                           and dashboard.controller.stop()))
    drawn.clear()
    dashboard.run(block=True)  # stopped after round 3 of 5: the rounds not drawn yet are drawn then
    assert drawn == [1, 3] and dashboard.controller.unfinished
    assert [len(line.get_xdata()) for line in dashboard.figure.axes[0].lines] == [13, 13]


def test_dashboard_warms_up_when_a_setting_changes(data):
    dashboard = TrainingDashboard(*data, config=FAST)
    dashboard.run(block=True)
    dashboard.panel.widgets['clients_per_round'].value = 6
    thread = dashboard.controller._warm_thread
    assert thread is not None
    thread.join()
    assert dashboard.controller.warm_up_error is None


def test_dashboard_status_warns_when_the_loss_explodes_without_nan(data):
    """At a client learning rate of 1e9 the loss reaches 1e11 with finite weights: the status line says so."""
    dashboard = TrainingDashboard(*data, FAST.replace(rounds=2, client_learning_rate=1e9))
    with pytest.warns(ft.experiment.ExplodingLossWarning):
        dashboard.run(block=True)
    assert 'Warning:' in dashboard.status.value and 'learning rate too large' in dashboard.status.value
    assert dashboard.progress.bar_style == 'warning'
