"""Saving and restoring a training run: server state, metric history and notes, in one file.

The file format is a NumPy ``.npz`` archive (a zip file) written without pickle:

* ``trainable/<i>``, ``non_trainable/<i>``, ``optimizer_state/<i>``: the arrays of
  the :class:`~fedteach.ServerState`, in order;
* for a :class:`~fedteach.ScaffoldState` also ``control/<i>`` (the server's
  control variate) and ``client_controls/<i>`` (every client's, named
  ``[client_id, variable]`` in the header);
* ``__checkpoint__``: one JSON string with ``format`` (``"fedteach-checkpoint"``),
  ``version`` (1), the variable ``names``, every array's ``shape`` and ``dtype``,
  the metric ``history`` (a list of dicts, one per round) and the user's
  ``metadata`` (anything JSON can hold).

Both writing and reading use ``allow_pickle=False``, so loading a file cannot run
code. The file is written to a temporary file in the same folder and then
renamed over the target (``os.replace``), so an interrupted save never leaves a
half-written checkpoint behind: the target holds either the old or the new one.

Restoring is exact: the arrays come back bit for bit, and since every random
choice of a round derives from ``(seed, round number, client)``, continuing
from a restored state gives the same weights and metrics as a run that was
never interrupted.
"""
from __future__ import annotations

import collections
import json
import os
import tempfile
import zipfile

import numpy as np

from fedteach.rounds.state import ModelWeights, RoundMetrics, ScaffoldState, ServerState

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]

FORMAT = "fedteach-checkpoint"
VERSION = 1
_META_KEY = "__checkpoint__"
_PARTS = ("trainable", "non_trainable", "optimizer_state")
_SCAFFOLD_PARTS = ("control", "client_controls")


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read: corrupt, foreign, or from another model.

    Example:
        >>> raise CheckpointError("run.npz is not a fedteach checkpoint")
        Traceback (most recent call last):
        ...
        fedteach.checkpoint.CheckpointError: run.npz is not a fedteach checkpoint
    """


def save_checkpoint(path, state: ServerState, history=None, metadata=None) -> str:
    """Saves ``state`` (plus the metric history and free-form metadata) to one file.

    Args:
        path: the file to write, e.g. ``'run.npz'``; it is replaced atomically
            if it exists (written exactly at this path: no extension is added).
        state: the :class:`~fedteach.ServerState` from ``process.initialize()``
            or ``process.next``.
        history: optional list of per-round metrics (``RoundMetrics`` or dicts
            of numbers), e.g. the metrics of every round so far.
        metadata: optional dict of JSON-serializable values, e.g. the seed and
            the hyperparameters, to remember how the run was made.

    Returns:
        The path written, as a string.

    Raises:
        TypeError: ``state`` is not a ServerState.
        CheckpointError: ``history`` or ``metadata`` cannot be written as JSON.

    Example:
        >>> import os, tempfile, numpy as np
        >>> w = ModelWeights.from_lists([np.arange(3, dtype=np.float32)], [], ['dense/bias'])
        >>> state = ServerState(w, (np.int64(2),))
        >>> path = os.path.join(tempfile.mkdtemp(), 'run.npz')
        >>> _ = save_checkpoint(path, state, history=[{'loss': 2.5}, {'loss': 1.25}], metadata={'seed': 0})
        >>> restored, history, metadata = load_checkpoint(path)
        >>> restored.model.trainable['dense/bias'].tolist(), restored.round_num
        ([0.0, 1.0, 2.0], 2)
        >>> print(history[-1])
        <loss=1.25>
        >>> metadata
        {'seed': 0}
    """
    if not isinstance(state, ServerState):
        raise TypeError(f"save_checkpoint expects the ServerState returned by process.initialize() or "
                        f"process.next(), got {type(state).__name__}. Usage: save_checkpoint(path, state, history)")
    path = os.fspath(path)
    arrays, names, shapes, dtypes = {}, {}, {}, {}
    groups = {"trainable": list(state.model.trainable.items()),
              "non_trainable": list(state.model.non_trainable.items()),
              "optimizer_state": [(str(i), s) for i, s in enumerate(state.optimizer_state)]}
    if isinstance(state, ScaffoldState):
        groups["control"] = list(state.control.items())
        groups["client_controls"] = [([client, name], value) for client, controls in state.client_controls.items()
                                     for name, value in controls.items()]
    for part, items in groups.items():
        names[part] = [name for name, _ in items]
        shapes[part], dtypes[part] = [], []
        for i, (name, value) in enumerate(items):
            value = np.asarray(value)
            if value.dtype.kind not in "biufc":
                raise CheckpointError(f"cannot save {part} {name!r}: its dtype {value.dtype} is not numeric.")
            arrays[f"{part}/{i}"] = value
            shapes[part].append(list(value.shape))
            dtypes[part].append(value.dtype.str)
    header = {"format": FORMAT, "version": VERSION, "names": names, "shapes": shapes, "dtypes": dtypes,
              "history": [_plain_metrics(m, i) for i, m in enumerate(history or [])],
              "metadata": {} if metadata is None else metadata}
    try:
        text = json.dumps(header, allow_nan=True)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"cannot save the metadata {metadata!r} as JSON ({error}). Keep it to dicts, "
                              "lists, strings, numbers, booleans and None.") from None
    arrays[_META_KEY] = np.array(text)
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(file, allow_pickle=False, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def load_checkpoint(path, process=None):
    """Reads a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        process: optional process (from ``build_federated_averaging_process``)
            that will continue the run; the checkpoint's variable names, shapes
            and dtypes are checked against ``process.initialize()``.

    Returns:
        ``(state, history, metadata)``: the :class:`~fedteach.ServerState`, the
        list of per-round :class:`~fedteach.RoundMetrics`, and the metadata dict.

    Raises:
        CheckpointError: no such file, not a fedteach checkpoint, a corrupt or
            truncated file, or (with ``process``) a checkpoint of another model.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), 'notes.txt')
        >>> with open(path, 'w') as f:
        ...     _ = f.write('hello')
        >>> load_checkpoint(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        fedteach.checkpoint.CheckpointError: '...notes.txt' is not a fedteach checkpoint: it is not an .npz archive ...
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path!r}: the file does not exist. "
                              "Check the path, or write one with ft.save_checkpoint(path, state, history).")
    hint = "Load a file written by ft.save_checkpoint, or start again from process.initialize()."
    try:
        with _open_npz(path) as archive:
            if _META_KEY not in archive.files:
                raise CheckpointError(f"{path!r} is an .npz archive but not a fedteach checkpoint: it has no "
                                      f"{_META_KEY!r} entry (it holds {sorted(archive.files)[:5]}). {hint}")
            header = json.loads(str(archive[_META_KEY]))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise CheckpointError(f"{path!r} is not a fedteach checkpoint: its header does not say "
                                      f"format={FORMAT!r}. {hint}")
            if header.get("version") != VERSION:
                raise CheckpointError(f"{path!r} is a fedteach checkpoint of format version "
                                      f"{header.get('version')!r}; this fedteach reads version {VERSION}. "
                                      "Load it with the fedteach version that wrote it.")
            parts = {}
            for part in _PARTS + tuple(p for p in _SCAFFOLD_PARTS if p in header["names"]):
                names, shapes, dtypes = (header[k][part] for k in ("names", "shapes", "dtypes"))
                values = []
                for i, (name, shape, dtype) in enumerate(zip(names, shapes, dtypes, strict=True)):
                    value = archive[f"{part}/{i}"]
                    if list(value.shape) != list(shape) or value.dtype.str != dtype:
                        raise CheckpointError(
                            f"{path!r} is corrupt: {part} {name!r} has shape {list(value.shape)} and dtype "
                            f"{value.dtype.str}, but its header says {list(shape)} and {dtype}. {hint}")
                    values.append((name, value))
                parts[part] = values
            history = [RoundMetrics(m) for m in header["history"]]
            metadata = header["metadata"]
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError) as error:
        raise CheckpointError(f"{path!r} is not a fedteach checkpoint (not an .npz archive, or a truncated or "
                              f"corrupt one: {error}). {hint}") from error
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path!r} is not a fedteach checkpoint (not an .npz archive, or a truncated or "
                              f"corrupt one: {type(error).__name__}: {error}). {hint}") from error
    state = ServerState(
        ModelWeights(collections.OrderedDict(parts["trainable"]), collections.OrderedDict(parts["non_trainable"])),
        tuple(value for _, value in parts["optimizer_state"]))
    if "control" in parts:
        client_controls = collections.OrderedDict()
        for (client, name), value in parts["client_controls"]:
            client_controls.setdefault(client, collections.OrderedDict())[name] = value
        state = ScaffoldState(state.model, state.optimizer_state, collections.OrderedDict(parts["control"]),
                              client_controls)
    if process is not None:
        _check_matches(path, state, process.initialize())
    return state, history, metadata


def _open_npz(path: str):
    with open(path, "rb") as file:
        magic = file.read(4)
    if magic != b"PK\x03\x04":
        raise CheckpointError(f"{path!r} is not a fedteach checkpoint: it is not an .npz archive (a checkpoint "
                              f"is a zip file; this one starts with {magic!r}). Load a file written by "
                              "ft.save_checkpoint.")
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path!r} is not a fedteach checkpoint: it is a single .npy array, not an .npz "
                              "archive. Load a file written by ft.save_checkpoint.")
    return loaded


def _plain_metrics(metrics, index: int) -> dict:
    if not isinstance(metrics, collections.abc.Mapping):
        raise CheckpointError(f"history[{index}] is a {type(metrics).__name__}; history must be a list of "
                              "per-round metrics (the metrics returned by process.next, or dicts).")
    out = {}
    for key, value in metrics.items():
        value = np.asarray(value)
        if value.ndim != 0 or value.dtype.kind not in "biuf":
            raise CheckpointError(f"history[{index}][{key!r}] = {value!r} is not a number; history entries "
                                  "must be dicts of numbers.")
        out[str(key)] = int(value) if value.dtype.kind in "biu" else float(value)
    return out


def _describe(state: ServerState) -> dict:
    control = {"control": [(k, np.shape(v), np.asarray(v).dtype.str) for k, v in state.control.items()]
               } if isinstance(state, ScaffoldState) else {"control": None}
    return {**control,
        "trainable": [(k, np.shape(v), np.asarray(v).dtype.str) for k, v in state.model.trainable.items()],
        "non_trainable": [(k, np.shape(v), np.asarray(v).dtype.str) for k, v in state.model.non_trainable.items()],
        "optimizer_state": [(str(i), np.shape(v), np.asarray(v).dtype.str)
                            for i, v in enumerate(state.optimizer_state)],
    }


def _check_matches(path: str, state: ServerState, template: ServerState) -> None:
    got, expected = _describe(state), _describe(template)
    if (got["control"] is None) != (expected["control"] is None):
        kind = lambda d: "SCAFFOLD's (with control variates)" if d["control"] is not None else "a plain ServerState"
        raise CheckpointError(f"{path!r} holds {kind(got)} but this process keeps {kind(expected)}. Continue "
                              "with a process of the algorithm that wrote the checkpoint.")
    for part in _PARTS + ("control",) * (got["control"] is not None):
        if got[part] == expected[part]:
            continue
        fmt = lambda entries: ", ".join(f"{n}: {list(s)} {d}" for n, s, d in entries) or "nothing"
        raise CheckpointError(
            f"{path!r} belongs to another model: its {part} variables are [{fmt(got[part])}] but this "
            f"process's model has [{fmt(expected[part])}]. Build the process with the same model_fn and "
            "optimizers that wrote the checkpoint.")
