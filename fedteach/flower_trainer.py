"""A SuperNode's long-lived fedteach trainer: TensorFlow is imported once per node, not once per round.

:func:`fedteach.flower.run_local_federation` starts one trainer next to each
SuperNode::

    python -m fedteach.flower_trainer EXPERIMENT WRITER DATA_PATH SOCKET KEY_FILE

The trainer builds the node's model and dataset and traces its training
(:func:`fedteach.flower.local_trainer`), then listens on the Unix socket
``SOCKET`` (in the run's private folder). Each connection is one round: the
ClientApp of :mod:`fedteach.flower_client` authenticates with the shared secret
in ``KEY_FILE``, sends the round's model and receives ``("ok", (arrays,
metrics))``, or ``("error", traceback)`` when training failed. The socket
appears only once the trainer is ready, so the federation can wait for it.
It runs until it is stopped (the federation's end, or its watchdog).
"""
from __future__ import annotations

import pathlib
import sys
import traceback
from multiprocessing.connection import Listener


def serve(experiment: str, writer: str, data_path: str, socket_path: str, key_file: str) -> None:
    """Trains the node's rounds, one per connection, until the process is stopped."""
    from fedteach.flower import local_trainer
    train = local_trainer(experiment, {"writer-id": writer, "data-path": data_path})
    key = pathlib.Path(key_file).read_bytes()
    with Listener(socket_path, family="AF_UNIX", authkey=key) as listener:
        print("ready", flush=True)
        while True:
            try:
                conn = listener.accept()
            except Exception:  # noqa: BLE001 - a client that failed the handshake; the trainer stays up
                traceback.print_exc()
                continue
            with conn:
                try:
                    reply = ("ok", train(conn.recv()))
                except Exception:  # noqa: BLE001 - the error travels back to the ClientApp, which raises it
                    reply = ("error", traceback.format_exc())
                conn.send(reply)


if __name__ == "__main__":  # pragma: no cover - run as a process by run_local_federation
    serve(*sys.argv[1:6])
