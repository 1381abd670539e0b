"""fedteach's Flower ClientApp, without TensorFlow: it forwards each round to the node's long-lived trainer.

Flower 1.42's SuperNode starts a new ClientApp process for every message it
receives. A ClientApp that imported fedteach would import TensorFlow, load its
data, rebuild the model and trace its training again, every round: about 7
CPU-seconds per client. This module imports only Flower and the standard
library. :func:`fedteach.flower.run_local_federation` starts, next to each
SuperNode, one trainer process (:mod:`fedteach.flower_trainer`) that imports
TensorFlow once, holds its writer's data and its traced training, and listens
on a Unix socket in the run's private folder; the ClientApp sends it the
round's model and returns its reply.

Where the node config names no trainer (Flower's Simulation Runtime, whose
ClientApps live in long-lived Ray workers), the ClientApp trains in its own
process with :func:`fedteach.flower.train_reply`.

``run_local_federation`` copies this file into the Flower App Bundle as a
module of its own (``fedteach_flower_client``), so Flower imports it without
importing the ``fedteach`` package.
"""
from __future__ import annotations

import pathlib
from multiprocessing.connection import Client

from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

TRAINER_SOCKET = "trainer-socket"  # node config key: the trainer's Unix socket
TRAINER_KEY = "trainer-key"        # node config key: the file holding the socket's shared secret

client_app = ClientApp()


def ask_trainer(socket_path: str, key: bytes, arrays: dict) -> tuple[dict, dict]:
    """Sends the round's model (name -> array) to a trainer; returns its ``(arrays, metrics)``.

    The connection authenticates both ends with ``key`` (HMAC challenge, see
    :mod:`multiprocessing.connection`); the socket lives in a folder only this
    user can open. A trainer that failed replies with its error, raised here.
    """
    with Client(socket_path, family="AF_UNIX", authkey=key) as conn:
        conn.send(arrays)
        status, payload = conn.recv()
    if status != "ok":
        raise RuntimeError(f"the node's fedteach trainer failed:\n{payload}")
    return payload


def reply(msg: Message, train) -> Message:
    """The reply to a training message: ``train(arrays) -> (new_arrays, metrics)`` on the message's model."""
    new_arrays, metrics = train({name: array.numpy() for name, array in msg.content["arrays"].items()})
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in new_arrays.items()}),
                          "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@client_app.train()
def train(msg: Message, context) -> Message:
    """One round of local training: by the node's trainer if it has one, else in this process."""
    socket_path = context.node_config.get(TRAINER_SOCKET)
    if not socket_path:
        from fedteach.flower import train_reply  # Simulation Runtime: TensorFlow in this (long-lived) worker
        return train_reply(msg, context)
    key = pathlib.Path(str(context.node_config[TRAINER_KEY])).read_bytes()
    return reply(msg, lambda arrays: ask_trainer(str(socket_path), key, arrays))
