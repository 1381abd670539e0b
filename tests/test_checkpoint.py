"""Checkpoints: one safe file (an .npz without pickle) that restores a run exactly."""
import json
import os
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedteach as ft
from fedteach.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

SPEC = {"x": tf.TensorSpec([None, 784], tf.float32), "y": tf.TensorSpec([None, 1], tf.int32)}
DIGITS, _ = ft.load_offline_digits(num_clients=5, seed=0)
TRAIN = ft.ClientData.from_arrays({c: {k: v[:24] for k, v in DIGITS.client_arrays(c).items()}
                                   for c in DIGITS.client_ids})  # 24 real digits per writer: fast


def model_fn(units=10):
    def build():
        net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(units, activation="softmax")])
        return ft.from_keras_model(net, "sparse_categorical_crossentropy", SPEC, metrics=["accuracy"])
    return build


def build(engine, units=10, seed=3, server_momentum=0.0):
    return ft.build_federated_averaging_process(
        model_fn(units), lambda: keras.optimizers.SGD(0.05),
        lambda: keras.optimizers.SGD(1.0, momentum=server_momentum), seed=seed, engine=engine)


def round_data(round_num, seed=3):
    """Three of the five writers, chosen from (seed, round) as a restored run chooses them again."""
    ids = ft.sample_clients(TRAIN.client_ids, 3, round_num=round_num, seed=seed)
    return ft.make_federated_data(TRAIN, ids, ft.preprocess_for_tutorial(num_epochs=1, batch_size=16))


def run(process, state, rounds, history):
    for _ in range(rounds):
        state, metrics = process.next(state, round_data(state.round_num + 1))
        history.append(metrics)
    return state, history


@pytest.mark.parametrize("engine", ["fast", "general"])
def test_restore_and_continue_equals_an_uninterrupted_run_bit_for_bit(engine, tmp_path):
    uninterrupted = build(engine, server_momentum=0.5)
    straight, straight_history = run(uninterrupted, uninterrupted.initialize(), 4, [])

    first = build(engine, server_momentum=0.5)
    state, history = run(first, first.initialize(), 2, [])
    save_checkpoint(tmp_path / "run.npz", state, history, metadata={"seed": 3, "engine": engine})

    second = build(engine, server_momentum=0.5)  # a new session: a fresh process and model
    state, history, metadata = load_checkpoint(tmp_path / "run.npz", process=second)
    assert metadata == {"seed": 3, "engine": engine} and state.round_num == 2
    state, history = run(second, state, 2, history)

    assert [dict(m) for m in history] == [dict(m) for m in straight_history]
    for part in ("trainable", "non_trainable"):
        for name, value in getattr(straight.model, part).items():
            np.testing.assert_array_equal(getattr(state.model, part)[name], value)
    for a, b in zip(state.optimizer_state, straight.optimizer_state):  # momentum buffers included
        np.testing.assert_array_equal(a, b)


def test_arrays_names_dtypes_and_history_come_back_exactly(tmp_path):
    p = build("fast", server_momentum=0.9)
    state, history = run(p, p.initialize(), 1, [])
    path = save_checkpoint(tmp_path / "a.npz", state, history)
    restored, restored_history, metadata = load_checkpoint(path)
    assert list(restored.model.trainable) == ["dense/kernel", "dense/bias"] and metadata == {}
    for name, value in state.model.trainable.items():
        assert restored.model.trainable[name].dtype == value.dtype
        np.testing.assert_array_equal(restored.model.trainable[name], value)
    assert [np.asarray(s).dtype for s in restored.optimizer_state] == [np.asarray(s).dtype
                                                                       for s in state.optimizer_state]
    assert restored_history == history and str(restored_history[0]) == str(history[0])


def test_the_file_is_a_plain_npz_with_a_json_header_and_no_pickle(tmp_path):
    p = build("fast")
    path = save_checkpoint(tmp_path / "run.npz", p.initialize(), metadata={"lr": 0.05})
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["__checkpoint__", "optimizer_state/0", "trainable/0", "trainable/1"]
        header = json.loads(str(archive["__checkpoint__"]))
    assert header["format"] == "fedteach-checkpoint" and header["version"] == 1
    assert header["names"]["trainable"] == ["dense/kernel", "dense/bias"]
    assert header["shapes"]["trainable"] == [[784, 10], [10]] and header["metadata"] == {"lr": 0.05}


def test_saving_replaces_the_file_atomically_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    p = build("fast")
    path = tmp_path / "run.npz"
    save_checkpoint(path, p.initialize(), [{"loss": 1.0}])

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, p.initialize(), [{"loss": 1.0}, {"loss": 0.5}])
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["run.npz"]
    assert len(load_checkpoint(path)[1]) == 1  # the old checkpoint, whole


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "small.npz", build("fast", units=2).initialize())
    with pytest.raises(CheckpointError, match=r"small\.npz' belongs to another model: its trainable variables are "
                                              r"\[dense/kernel: \[784, 2\] <f4, dense/bias: \[2\] <f4\] but this "
                                              r"process's model has \[dense/kernel: \[784, 10\] <f4, dense/bias: "
                                              r"\[10\] <f4\]\. Build the process with the same model_fn"):
        load_checkpoint(path, process=build("fast", units=10))
    momentum = save_checkpoint(tmp_path / "momentum.npz", build("fast", server_momentum=0.9).initialize())
    with pytest.raises(CheckpointError, match="its optimizer_state variables are"):
        load_checkpoint(momentum, process=build("fast"))


def test_a_truncated_or_corrupt_file_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "run.npz", build("fast").initialize(), [{"loss": 1.0}])
    data = open(path, "rb").read()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.npz' is not a fedteach checkpoint \(not an \.npz "
                                              r"archive, or a truncated or corrupt one"):
        load_checkpoint(truncated)
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # a bit flip inside the kernel's bytes: the zip CRC catches it
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(corrupt)


def test_files_that_are_not_checkpoints_are_refused(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.txt' is not a fedteach checkpoint: it is not an \.npz "
                                              r"archive \(a checkpoint is a zip file; this one starts with b'hell'\)"):
        load_checkpoint(text)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(CheckpointError, match=r"other\.npz' is an \.npz archive but not a fedteach checkpoint: "
                                              r"it has no '__checkpoint__' entry \(it holds \['weights'\]\)"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*missing\.npz': the file does not exist"):
        load_checkpoint(tmp_path / "missing.npz")
    future = tmp_path / "future.npz"
    with zipfile.ZipFile(future, "w") as archive:
        np.lib.format.write_array(archive.open("__checkpoint__.npy", "w"),
                                  np.array(json.dumps({"format": "fedteach-checkpoint", "version": 99})))
    with pytest.raises(CheckpointError, match="format version 99; this fedteach reads version 1"):
        load_checkpoint(future)


def test_bad_arguments_to_save_are_explained(tmp_path):
    state = build("fast").initialize()
    with pytest.raises(TypeError, match="save_checkpoint expects the ServerState .* got ModelWeights"):
        save_checkpoint(tmp_path / "x.npz", state.model)
    with pytest.raises(CheckpointError, match="cannot save the metadata .* as JSON"):
        save_checkpoint(tmp_path / "x.npz", state, metadata={"optimizer": keras.optimizers.SGD(0.1)})
    with pytest.raises(CheckpointError, match=r"history\[0\]\['note'\] = .* is not a number"):
        save_checkpoint(tmp_path / "x.npz", state, history=[{"note": "good"}])
    assert not os.listdir(tmp_path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)
