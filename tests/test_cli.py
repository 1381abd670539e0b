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
    assert "round  1, metrics=<accuracy=" in out and "round  2, metrics=<accuracy=" in out
    assert "[###############---------------] 1/2" in err and "2/2" in err
    history = json.loads((tmp_path / "h.json").read_text())
    assert [entry["round"] for entry in history] == [1, 2]
    assert (tmp_path / "h.csv").read_text().splitlines()[0].startswith("run,round,train_loss")
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dp_rounds_report_epsilon(capsys):
    assert cli.main(["--rounds", "1", "--epochs", "1", "--dp-noise", "1.0", "--quiet"]) == 0
    assert "epsilon=" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--client-lr", "-0.1"], "client_learning_rate must be a finite number > 0"),
    (["--batch-size", "0"], "batch_size must be an integer >= 1"),
    (["--bits", "40"], "quantize_bits must be an integer from 1 to 16"),
])
def test_bad_settings_exit_with_a_message(args, message, capsys):
    assert cli.main(args + ["--rounds", "1"]) == 2
    assert message in capsys.readouterr().err
