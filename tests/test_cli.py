"""The `fedteach` command: the tutorial's rounds headless, with files written on request."""
import json

import pytest

from fedteach import cli


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("FEDTEACH_DATA", "offline")


def test_prints_every_round_like_the_tutorial_and_writes_the_history(tmp_path, capsys):
    code = cli.main(["--rounds", "2", "--epochs", "1", "--csv", str(tmp_path / "h.csv"),
                     "--json", str(tmp_path / "h.json"), "--plot", str(tmp_path / "h.png")])
    out, err = capsys.readouterr()
    assert code == 0
    assert "Using the offline digits dataset" in out
    assert "Evaluation (eval: below): held-out test examples of" in out
    assert "round  1, metrics=<accuracy=" in out and "round  2, metrics=<accuracy=" in out
    assert "[###############---------------] 1/2" in err and "2/2" in err
    history = json.loads((tmp_path / "h.json").read_text())
    assert [entry["round"] for entry in history] == [1, 2]
    assert (tmp_path / "h.csv").read_text().splitlines()[0].startswith("run,round,train_loss")
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dp_rounds_report_epsilon(capsys):
    assert cli.main(["--rounds", "1", "--epochs", "1", "--dp-noise", "1.0", "--quiet"]) == 0
    assert "epsilon=" in capsys.readouterr().out


def test_an_attack_and_a_robust_aggregator_from_the_command_line(capsys):
    assert cli.main(["--rounds", "1", "--epochs", "1", "--clients-per-round", "5", "--attack", "sign_flip",
                     "--malicious-fraction", "0.4", "--robust", "median", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "malicious_clients=2 trimmed_fraction=" in out  # 40% of 5 clients each round


def test_a_backdoor_reports_its_success_rate(capsys):
    assert cli.main(["--rounds", "1", "--epochs", "1", "--attack", "backdoor", "--quiet"]) == 0
    assert "backdoor success=" in capsys.readouterr().out


def test_malicious_fraction_without_an_attack_is_refused(capsys):
    assert cli.main(["--malicious-fraction", "0.5", "--rounds", "1"]) == 2
    assert "add --attack" in _one_line_error(capsys)


@pytest.mark.parametrize("args, message", [
    (["--client-lr", "-0.1"], "client_learning_rate must be a finite number > 0"),
    (["--batch-size", "0"], "batch_size must be an integer >= 1"),
    (["--bits", "40"], "quantize_bits must be an integer from 1 to 16"),
    (["--attack", "sign_flip", "--malicious-fraction", "1.5"], "malicious_fraction must be a number from 0 to 1"),
    (["--robust", "median", "--dp-noise", "1.0"], "choose one"),
    (["--robust", "krum", "--clients-per-round", "4"], "needs more than 2f + 2 = 4 clients per round"),
])
def test_bad_settings_exit_with_a_message(args, message, capsys):
    assert cli.main(args + ["--rounds", "1"]) == 2
    assert message in capsys.readouterr().err


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_more_clients_than_the_dataset_has_is_one_line_and_status_2(capsys):
    assert cli.main(["--clients-per-round", "100000", "--rounds", "1"]) == 2
    assert "--clients-per-round 100000 is more than the 200 clients" in _one_line_error(capsys)


def test_emnist_without_network_says_what_to_do_in_one_line(monkeypatch, tmp_path, capsys):
    import fedteach as ft
    real = ft.load_emnist
    monkeypatch.setattr(ft, "load_emnist", lambda: real(cache_dir=tmp_path, base_url="http://127.0.0.1:9/", timeout=1))
    monkeypatch.delenv("FEDTEACH_DATA")
    assert cli.main(["--data", "emnist", "--rounds", "1"]) == 2
    assert "use --data offline" in _one_line_error(capsys)


def test_mu_without_fedprox_is_refused_instead_of_ignored(capsys):
    assert cli.main(["--mu", "0.1", "--rounds", "1"]) == 2
    assert "--algorithm fedprox" in _one_line_error(capsys)


def test_an_unknown_option_is_one_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--no-such-option"])
    assert stop.value.code == 2
    assert "unrecognized arguments: --no-such-option" in _one_line_error(capsys)


def test_offline_data_says_it_was_asked_for_and_one_round_is_singular(monkeypatch, capsys):
    monkeypatch.delenv("FEDTEACH_DATA")
    assert cli.main(["--data", "offline", "--rounds", "1", "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "offline digits dataset (200 simulated writers): --data offline." in out
    assert "\n1 round in " in out and "FEDTEACH_DATA" not in out


def test_lab_passes_jupyterlab_options_through(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command, env: calls.append((command, env)) or 0)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert cli.main(["lab", "--no-browser", "--port", "8890", "--allow-root"]) == 0
    command, env = calls[0]
    assert command[-4:] == ["--no-browser", "--port", "8890", "--allow-root"]
    # the kernels start TensorFlow quiet, whatever their notebooks import first
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("--rounds ROUNDS (default: 10)", "(default: 3)", "(default: 0.02)", "(default: linear)"):
        assert default.split(" (")[-1] in text
    assert "lab: open the course in JupyterLab" in text
