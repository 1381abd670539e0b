"""Graduating from the simulation: the same experiment on Flower's real federated engine.

fedteach simulates a federation inside one Python process. This module hands the
*same* experiment (``model_fn``, client optimizer, server optimizer, data, client
ids) to `Flower <https://flower.ai>`_, whose Deployment Runtime runs a server
(SuperLink + ServerApp) and clients (SuperNodes + ClientApps) as separate
processes that exchange messages over the network. fedteach grows no networking
of its own.

* :func:`to_flower_apps` turns a :class:`FlowerExperiment` into a Flower
  ``ServerApp`` and ``ClientApp`` with fedteach's FedAvg semantics: each client
  trains with fedteach's own :class:`~fedteach.rounds.general.ClientRunner`, the
  server averages the client models weighted by the number of examples trained
  on (Flower's ``FedAvg``), applies the average update with fedteach's server
  optimizer, and reports the metrics under the same names as
  ``process.next`` (``loss``, ``num_examples``, the Keras metrics).
* :func:`run_local_federation` starts a real local federation on loopback: one
  ``flower-superlink`` and N ``flower-supernode`` processes, each SuperNode
  holding only its own writer's examples and with a long-lived fedteach
  trainer next to it, all with TLS and SuperNode authentication; runs the
  experiment on it with ``flwr run`` and stops every process it started.
* :func:`run_simulation_runtime` runs the same App Bundle on Flower's
  Simulation Runtime (Ray workers), for many rounds.
* ``python -m fedteach.flower module:experiment`` does the same from a shell.

The experiment must live in an importable module (a file), because it is
shipped to the server and the clients inside the Flower App Bundle: functions
defined in a notebook cell cannot cross a process boundary.

Needs the optional extra: ``pip install fedteach[flower]``. Importing this
module works without Flower; the functions that need it say so.
"""
from __future__ import annotations

import collections
import dataclasses
import importlib
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Sequence

import numpy as np

NUM_EXAMPLES_KEY = "num-examples"   # Flower's FedAvg weights the clients' models by this metric.
_LOCAL_PREFIX = "local/"            # clients' metric states travel as "local/<metric>/<i>" entries.
_APP_MODULE = "fedteach_flower_app"
_CLIENT_MODULE = "fedteach_flower_client"

__all__ = ["FlowerExperiment", "FederationResult", "LocalFederation", "to_flower_apps", "run_local_federation",
           "run_simulation_runtime", "simulate_experiment", "comparison_table", "local_trainer", "train_reply",
           "make_credentials"]


def _require_flower():
    try:
        import flwr  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("fedteach.flower needs Flower: pip install 'fedteach[flower]'") from e


@dataclasses.dataclass
class FlowerExperiment:
    """A fedteach experiment, described so that another process can rebuild it.

    Args:
        model_fn: builds a new :class:`fedteach.Model` (as for
            :func:`fedteach.build_federated_averaging_process`).
        client_optimizer_fn: returns the client's Keras optimizer.
        client_data: the federated data (a :class:`fedteach.ClientData`).
        client_ids: the clients that take part, one Flower SuperNode each.
        preprocess_fn: turns a client's raw dataset into training batches,
            e.g. ``ft.preprocess_for_tutorial(num_epochs=10, shuffle_buffer=0)``.
        server_optimizer_fn: the server optimizer; default ``SGD(1.0)``.
        num_rounds: rounds of Federated Averaging.
        seed: the seed of the initial weights (as in fedteach's process).
    """

    model_fn: Callable
    client_optimizer_fn: Callable
    client_data: object
    client_ids: Sequence[str]
    preprocess_fn: Callable
    server_optimizer_fn: Callable | None = None
    num_rounds: int = 3
    seed: int = 0

    def build_process(self):
        """fedteach's own process for this experiment (general engine)."""
        from fedteach.rounds.fedavg import build_federated_averaging_process
        return build_federated_averaging_process(self.model_fn, self.client_optimizer_fn,
                                                 self.server_optimizer_fn, seed=self.seed, engine="general")


# ----------------------------------------------------------------------------- plain data <-> Flower records
def _weights_to_arrays(weights) -> dict:
    """ModelWeights as one flat dict ``{"trainable/<name>": array, "non_trainable/<name>": array}``."""
    arrays = {"trainable/" + k: np.ascontiguousarray(v) for k, v in weights.trainable.items()}
    arrays.update(("non_trainable/" + k, np.ascontiguousarray(v)) for k, v in weights.non_trainable.items())
    return arrays


def _arrays_to_weights(arrays, template):
    """The inverse of :func:`_weights_to_arrays`, with ``template``'s dtypes and shapes."""
    from fedteach.rounds.state import ModelWeights

    def part(prefix, values):
        return collections.OrderedDict((k, np.asarray(arrays[prefix + k]).astype(v.dtype).reshape(v.shape))
                                       for k, v in values.items())
    return ModelWeights(part("trainable/", template.trainable), part("non_trainable/", template.non_trainable))


def _weights_to_record(weights):
    from flwr.app import Array, ArrayRecord
    return ArrayRecord(collections.OrderedDict((k, Array(v)) for k, v in _weights_to_arrays(weights).items()))


def _record_to_weights(record, template):
    return _arrays_to_weights({k: a.numpy() for k, a in record.items()}, template)


def _outputs_to_metrics(num_examples: int, outputs) -> dict:
    """A client's local outputs (metric states) as MetricRecord entries: flat lists of numbers."""
    metrics = {NUM_EXAMPLES_KEY: int(num_examples)}
    for name, value in outputs.items():
        parts = value if isinstance(value, (list, tuple)) else [value]
        for i, part in enumerate(parts):
            flat = np.asarray(part).ravel()
            cast = int if np.issubdtype(flat.dtype, np.integer) else float
            metrics[f"{_LOCAL_PREFIX}{name}/{i}"] = [cast(x) for x in flat]
    return metrics


def _metrics_to_outputs(metrics, template):
    """The inverse of :func:`_outputs_to_metrics`, shaped like ``template`` (the server's own outputs)."""
    outputs = collections.OrderedDict()
    for name, value in template.items():
        parts = value if isinstance(value, (list, tuple)) else [value]
        rebuilt = [np.asarray(metrics[f"{_LOCAL_PREFIX}{name}/{i}"], dtype=np.asarray(p).dtype)
                   .reshape(np.shape(p)) for i, p in enumerate(parts)]
        outputs[name] = rebuilt if isinstance(value, (list, tuple)) else rebuilt[0]
    return outputs


# ----------------------------------------------------------------------------- the experiment, from anywhere
_CACHE: dict = {}


def _resolve(experiment, context=None):
    """The FlowerExperiment: given directly, or by "module:attribute" (from the run config)."""
    if experiment is None:
        experiment = context.run_config["experiment"]
    if isinstance(experiment, FlowerExperiment):
        return experiment
    if experiment not in _CACHE:
        module, _, attr = str(experiment).partition(":")
        value = getattr(importlib.import_module(module), attr or "experiment")
        value = value() if callable(value) and not isinstance(value, FlowerExperiment) else value
        if not isinstance(value, FlowerExperiment):
            raise TypeError(f"{experiment!r} is a {type(value).__name__}, not a fedteach.flower.FlowerExperiment")
        _CACHE[experiment] = value
    return _CACHE[experiment]


def _client_dataset(exp, node_config):
    """This node's own training data, and its writer id.

    The node config names the writer (``writer-id``) and, in a real deployment,
    a file with that writer's examples only (``data-path``); without a file the
    writer's examples are read from the experiment's ClientData.
    """
    from fedteach.data.client_data import ClientData
    if "writer-id" in node_config:
        writer = str(node_config["writer-id"])
    else:  # Flower's simulation engine numbers its nodes with partition-id.
        writer = exp.client_ids[int(node_config["partition-id"])]
    path = node_config.get("data-path")
    if path:
        with np.load(str(path)) as f:
            data = ClientData.from_arrays({writer: {k: f[k] for k in f.files}})
    else:
        data = exp.client_data
    return exp.preprocess_fn(data.create_tf_dataset_for_client(writer)), writer


def local_trainer(experiment, node_config) -> Callable[[dict], tuple[dict, dict]]:
    """The training of one node: ``train(arrays) -> (new_arrays, metrics)``, with Flower's plain data.

    Builds the model, its ``ClientRunner`` and the node's dataset once (cached
    per experiment and writer) and traces the training on a copy of the
    dataset, so that a round pays only for its steps. ``arrays`` is the
    round's model (``"trainable/<name>"`` and ``"non_trainable/<name>"``
    arrays); ``metrics`` holds ``num-examples`` and the client's metric states.
    The node's trainer process (:mod:`fedteach.flower_trainer`) and the
    in-process ClientApp of the Simulation Runtime both train with it.
    """
    exp = _resolve(experiment)
    dataset, writer = _client_dataset(exp, node_config)
    key = ("trainer", id(exp), writer)
    if key not in _CACHE:
        from fedteach.rounds.general import ClientRunner
        from fedteach.rounds.process import check_model_fn
        runner = ClientRunner(check_model_fn(exp.model_fn), exp.client_optimizer_fn())
        warmup, _ = _client_dataset(exp, node_config)
        runner.train(runner.weights(), warmup)  # traces the loop; the next call resets weights and optimizer

        def train(arrays: dict) -> tuple[dict, dict]:
            new_weights, n, outputs = runner.train(_arrays_to_weights(arrays, runner.weights()), dataset)
            return _weights_to_arrays(new_weights), _outputs_to_metrics(n, outputs)
        _CACHE[key] = train
    return _CACHE[key]


def train_reply(msg, context, experiment=None):
    """A ClientApp's reply to a training message, trained in this process (see :func:`local_trainer`)."""
    from fedteach.flower_client import reply
    return reply(msg, local_trainer(_resolve(experiment, context), context.node_config))


# ----------------------------------------------------------------------------- the apps
def to_flower_apps(experiment: FlowerExperiment | str | None = None, *, result_path: str | None = None):
    """A Flower ``(ServerApp, ClientApp)`` pair that runs ``experiment`` with fedteach's FedAvg.

    Args:
        experiment: a :class:`FlowerExperiment`, a ``"module:attribute"``
            naming one, or None to read ``"module:attribute"`` from the run
            config key ``experiment`` at run time (what the deployed app does).
        result_path: where the ServerApp writes the per-round results (JSON);
            default: the run config key ``result-path`` if set.

    The ClientApp trains with fedteach's ``ClientRunner`` on its own writer's
    data (:func:`local_trainer`) and replies with its model (ArrayRecord) and a
    MetricRecord holding ``num-examples`` (examples x local epochs, FedAvg's
    weight) and its metric states. The ServerApp runs Flower's FedAvg
    strategy, then applies the average update with fedteach's server
    optimizer and finalizes the metrics with the model's
    ``federated_output_computation``. A local federation deploys the
    TensorFlow-free ClientApp of :mod:`fedteach.flower_client` instead, which
    forwards each round to the node's long-lived trainer.
    """
    _require_flower()
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    client_app, server_app = ClientApp(), ServerApp()

    @client_app.train()
    def train(msg, context):
        return train_reply(msg, context, experiment)

    @server_app.main()
    def main(grid, context):
        exp = _resolve(experiment, context)
        num_rounds = int(context.run_config.get("num-rounds", exp.num_rounds))
        strategy = _make_strategy(exp, _node_ids(context.run_config.get("node-ids", "")))
        _poll_quickly(grid)
        result = strategy.start(grid=grid, initial_arrays=_weights_to_record(strategy.state.model),
                                num_rounds=num_rounds, timeout=float(context.run_config.get("timeout", 600)))
        del result
        path = result_path or context.run_config.get("result-path")
        if path:
            tmp = str(path) + ".part"
            with open(tmp, "w") as f:
                json.dump({"rounds": strategy.rounds}, f)
            os.replace(tmp, path)

    return server_app, client_app


def _wire_bytes(content) -> int:
    """Bytes of a message's content as Flower serializes it (protobuf), without transport framing."""
    try:
        from flwr.common.serde import recorddict_to_proto
        return int(recorddict_to_proto(content).ByteSize())
    except Exception:  # pragma: no cover - a Flower version without this helper
        return int(sum(r.count_bytes() for r in content.values()))


REPLY_POLL_SECONDS = 0.05
"""How often the ServerApp asks the SuperLink for the clients' replies (Flower's Grid waits 3 s between asks)."""


def _poll_quickly(grid) -> None:
    """Makes ``grid.send_and_receive`` ask for replies every :data:`REPLY_POLL_SECONDS` instead of every 3 s.

    The same loop as Flower's ``Grid.send_and_receive``, on its public
    ``push_messages`` and ``pull_messages``.
    """
    def send_and_receive(messages, *, timeout=None):
        pending = set(grid.push_messages(messages))
        end, replies = time.time() + (timeout or 0.0), []
        while timeout is None or time.time() < end:
            got = list(grid.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if not pending:
                break
            time.sleep(REPLY_POLL_SECONDS)
        return replies
    grid.send_and_receive = send_and_receive


def _node_ids(text: str) -> set[int]:
    """The run config's ``node-ids`` ("12 34"): the SuperNodes this run may send the model to; empty: any.

    Example:
        >>> sorted(_node_ids("12 34")), _node_ids("")
        ([12, 34], set())
    """
    return {int(x) for x in str(text).split()}


def _make_strategy(exp, node_ids: set[int] = frozenset()):
    from flwr.app import MetricRecord
    from flwr.serverapp.strategy import FedAvg

    process = exp.build_process()
    engine = process._engine  # fedteach's own server optimizer and metric aggregation
    template_outputs = engine.runner.model.report_local_outputs()
    n = len(exp.client_ids)

    class FedteachFedAvg(FedAvg):
        """Flower's FedAvg (weighted by num-examples) + fedteach's server optimizer and metrics."""

        def __init__(self):
            super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                             min_evaluate_nodes=0, min_available_nodes=n, weighted_by_key=NUM_EXAMPLES_KEY,
                             train_metrics_aggr_fn=self._aggregate_metrics)
            self.state = process.initialize()
            self.rounds = []
            self._t0 = None
            self._down = 0

        def _aggregate_metrics(self, records, _key):
            outputs = [_metrics_to_outputs(next(iter(r.metric_records.values())), template_outputs)
                       for r in records]
            return MetricRecord(engine.model.federated_output_computation(outputs))

        def configure_train(self, server_round, arrays, config, grid):
            self._t0 = time.perf_counter()
            messages = [m for m in super().configure_train(server_round, arrays, config, grid)
                        if not node_ids or m.metadata.dst_node_id in node_ids]  # never to a node it did not register
            self._down = sum(_wire_bytes(m.content) for m in messages)
            self._down_params = sum(a.numpy().nbytes for a in arrays.values()) * len(messages)
            return messages

        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            errors = [m.error.reason for m in replies if m.has_error()]
            if errors:
                raise RuntimeError(f"round {server_round}: client(s) failed: {errors}")
            up = sum(_wire_bytes(m.content) for m in replies)
            up_params = sum(a.numpy().nbytes for m in replies for a in m.content["arrays"].values())
            average, metrics = super().aggregate_train(server_round, replies)
            average = _record_to_weights(average, self.state.model)
            update = [a - w for a, w in zip(average.trainable.values(), self.state.model.trainable.values())]
            from fedteach.rounds.state import ModelWeights, ServerState
            weights, opt_state = engine.server.apply(self.state.model, self.state.optimizer_state, update)
            self.state = ServerState(ModelWeights(weights.trainable, average.non_trainable), opt_state)
            self.rounds.append({"round": server_round, "metrics": dict(metrics), "clients": len(replies),
                                "seconds": time.perf_counter() - self._t0,
                                "bytes_down": self._down, "bytes_up": up,
                                "param_bytes_down": self._down_params, "param_bytes_up": up_params})
            return _weights_to_record(self.state.model), metrics

    return FedteachFedAvg()


# ----------------------------------------------------------------------------- the simulation side
def simulate_experiment(exp: FlowerExperiment, engine: str = "auto") -> list[dict]:
    """Runs ``exp`` in fedteach's in-process simulation; one dict per round (metrics, seconds, bytes)."""
    from fedteach.data.preprocess import make_federated_data
    from fedteach.rounds.fedavg import build_federated_averaging_process
    process = build_federated_averaging_process(exp.model_fn, exp.client_optimizer_fn, exp.server_optimizer_fn,
                                                seed=exp.seed, engine=engine)
    data = make_federated_data(exp.client_data, list(exp.client_ids), exp.preprocess_fn)
    state = process.initialize()
    param_bytes = sum(v.nbytes for v in state.model.trainable.values()) + \
        sum(v.nbytes for v in state.model.non_trainable.values())
    rounds = []
    for r in range(1, exp.num_rounds + 1):
        t0 = time.perf_counter()
        state, metrics = process.next(state, data)
        rounds.append({"round": r, "metrics": dict(metrics), "clients": len(data),
                       "seconds": time.perf_counter() - t0, "bytes_down": 0, "bytes_up": 0,
                       "param_bytes_down": param_bytes * len(data), "param_bytes_up": param_bytes * len(data)})
    return rounds


def comparison_table(simulated: list[dict], deployed: list[dict]) -> str:
    """A plain-text table: loss per round, seconds per round and bytes per round, side by side.

    Example:
        >>> row = {'round': 1, 'metrics': {'loss': 2.0}, 'seconds': 0.5, 'bytes_down': 0, 'bytes_up': 0,
        ...        'param_bytes_down': 10, 'param_bytes_up': 10}
        >>> print(comparison_table([row], [dict(row, seconds=1.5, bytes_down=12, bytes_up=13)]))
        round  loss (sim)  loss (Flower)   |diff|  s (sim)  s (Flower)  param bytes  Flower bytes down+up
            1    2.000000       2.000000  0.0e+00     0.50        1.50           20                    25
    """
    lines = [f"{'round':>5}  {'loss (sim)':>10}  {'loss (Flower)':>13}  {'|diff|':>7}  {'s (sim)':>7}  "
             f"{'s (Flower)':>10}  {'param bytes':>11}  {'Flower bytes down+up':>20}"]
    for s, d in zip(simulated, deployed):
        ls, ld = s["metrics"]["loss"], d["metrics"]["loss"]
        lines.append(f"{s['round']:5d}  {ls:10.6f}  {ld:13.6f}  {abs(ls - ld):7.1e}  {s['seconds']:7.2f}  "
                     f"{d['seconds']:10.2f}  {d['param_bytes_down'] + d['param_bytes_up']:11d}  "
                     f"{d['bytes_down'] + d['bytes_up']:20d}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the local federation
@dataclasses.dataclass
class FederationResult:
    """What :func:`run_local_federation` returns."""

    rounds: list          # one dict per round: metrics, seconds, bytes_down, bytes_up, param bytes
    seconds: float        # wall time from the first process start to the last process gone
    pids: list            # every process that ran in the federation, the short-lived ones included (all gone)
    workdir: str          # the app, configs and logs (deleted unless keep_workdir)
    logs: dict            # process name -> log text
    ended: float = 0.0    # time.time() when every process was gone


_APP_SOURCE = '''"""Generated by fedteach.flower: the ServerApp of a fedteach experiment (the ClientApp: fedteach_flower_client)."""
from fedteach.flower import to_flower_apps

server_app = to_flower_apps()[0]  # the experiment is named by the run config key "experiment"
'''


def _free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago.

    A port is free again when this returns, so another program may take it
    before Flower binds it; Flower checks a port before binding it and then
    exits with "already in use", and :func:`run_local_federation` restarts
    that process with new ports (see ``_start_listening``). Holding the port
    instead (``SO_REUSEPORT``) is not possible: Flower's check binds without it.

    Example:
        >>> a, b = _free_ports(2)
        >>> a != b and 1024 <= min(a, b)
        True
    """
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _write_app(app_dir: pathlib.Path, experiment: str, experiment_file: pathlib.Path | None,
               num_rounds: int, result_path: pathlib.Path):
    app_dir.mkdir(parents=True)
    (app_dir / f"{_APP_MODULE}.py").write_text(_APP_SOURCE)
    # The ClientApp as a module outside the fedteach package: Flower imports it without TensorFlow.
    shutil.copy(pathlib.Path(__file__).with_name("flower_client.py"), app_dir / f"{_CLIENT_MODULE}.py")
    if experiment_file is not None:  # ship the experiment's code inside the Flower App Bundle
        shutil.copy(experiment_file, app_dir / experiment_file.name)
    (app_dir / "pyproject.toml").write_text(f'''[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedteach-flower-app"
version = "1.0.0"
description = "A fedteach experiment as a Flower App"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedteach"

[tool.flwr.app.components]
serverapp = "{_APP_MODULE}:server_app"
clientapp = "{_CLIENT_MODULE}:client_app"

[tool.flwr.app.config]
experiment = "{experiment}"
num-rounds = {int(num_rounds)}
result-path = "{result_path}"
node-ids = ""
timeout = 600
''')


def _descendants(pid: int) -> list[int]:
    import psutil
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _stop(procs: dict, known: set, grace: float = 5.0) -> None:
    """Stops every process we started and their descendants (Flower detaches some into new sessions)."""
    import psutil
    for p in procs.values():
        known.update(_descendants(p.pid))
    for p in procs.values():  # SIGTERM to each process group we created
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    alive = []
    for pid in known:
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            alive.append(proc)
        except psutil.Error:
            pass
    for p in procs.values():
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    _, still = psutil.wait_procs(alive, timeout=grace)
    for p in procs.values():
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    for proc in still:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(still, timeout=grace)


def make_credentials(folder, num_nodes: int) -> dict:
    """TLS and SuperNode keys for one local federation, created in ``folder`` (readable by this user only).

    A certificate authority made for the run signs the server certificate of
    127.0.0.1 (the SuperLink's APIs, and each SuperNode's Runtime API); each
    SuperNode gets an EC P-384 key pair in OpenSSH format, whose public half
    the SuperLink is told to accept. Nothing here is reused by another run.

    Example:
        >>> import tempfile
        >>> creds = make_credentials(tempfile.mkdtemp(), 2)
        >>> sorted(creds), len(creds['node_keys'])
        (['ca', 'node_keys', 'server_cert', 'server_key'], 2)
    """
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = pathlib.Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)

    def write(name, data):
        path = folder / name
        path.touch(mode=0o600)
        path.write_bytes(data)
        return str(path)

    def pem_key(key, fmt=serialization.PrivateFormat.TraditionalOpenSSL):
        return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject, issuer, public_key, signer, ca: bool, names=()):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    ca_key, server_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedteach local federation CA")])
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    creds = {
        "ca": write("ca.pem", certificate(ca_name, ca_name, ca_key.public_key(), ca_key, True)),
        "server_cert": write("server.pem", certificate(
            server_name, ca_name, server_key.public_key(), ca_key, False,
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])),
        "server_key": write("server.key", pem_key(server_key)),
        "node_keys": [],
    }
    for i in range(num_nodes):
        key = ec.generate_private_key(ec.SECP384R1())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        creds["node_keys"].append((write(f"node-{i}.key", pem_key(key, serialization.PrivateFormat.OpenSSH)),
                                   write(f"node-{i}.pub", public)))
    return creds


def run_local_federation(experiment: str, *, num_rounds: int | None = None, experiment_file=None,
                         timeout: float = 600.0, keep_workdir: bool = False, verbose: bool = False
                         ) -> FederationResult:
    """Runs ``experiment`` on a real local Flower federation on loopback, then stops it.

    Starts one ``flower-superlink`` (the server; it starts the ServerApp in a
    process of its own) and one ``flower-supernode`` per client id, with a
    long-lived fedteach trainer next to each (:mod:`fedteach.flower_trainer`:
    it imports TensorFlow, loads the writer's data and traces the training
    once); each round, a SuperNode starts a TensorFlow-free ClientApp process
    (:mod:`fedteach.flower_client`) that hands the model to its trainer. The
    experiment is sent as a Flower App Bundle with ``flwr run``; the ServerApp
    writes the per-round results to a file that this function reads.

    Nobody else is let in: the SuperLink's APIs and the SuperNodes' Runtime
    APIs use TLS with a certificate authority made for the run
    (:func:`make_credentials`); the SuperLink accepts only the SuperNodes whose
    keys this function registered, and the ServerApp sends the model only to
    them. What open-source Flower cannot protect: its Control API has no user
    authentication, so a local user who can reach its port (loopback, this
    run's lifetime) could submit a run or register a node of their own.

    Nothing is left behind: a watchdog process (:mod:`fedteach.flower_watchdog`)
    stops every process of the run and removes its work folder (the clients'
    data and the keys, readable by this user only) when this function returns,
    and also when the process that called it dies (a Jupyter kernel restarted
    or killed). Flower's telemetry is off unless ``FLWR_TELEMETRY_ENABLED`` is
    set. A process whose port another program took first is started again with
    new ports.

    Args:
        experiment: ``"module:attribute"`` naming a :class:`FlowerExperiment`
            (or a function returning one).
        num_rounds: overrides the experiment's ``num_rounds``.
        experiment_file: the module's file, copied into the App Bundle;
            default: the module's ``__file__``.
        timeout: seconds for the whole run.
        keep_workdir: keep the folder with the app, configs and logs.
        verbose: print the processes' logs at the end.
    """
    with LocalFederation(experiment, experiment_file=experiment_file, keep_workdir=keep_workdir,
                         verbose=verbose) as federation:
        return federation.run(num_rounds, timeout=timeout)


def run_simulation_runtime(experiment: str, *, num_rounds: int | None = None, experiment_file=None,
                           timeout: float = 600.0, keep_workdir: bool = False, verbose: bool = False
                           ) -> FederationResult:
    """Runs ``experiment`` on Flower's Simulation Runtime: the same apps, for many rounds.

    A ``flower-superlink`` in simulation mode (TLS, on loopback) receives the
    same Flower App Bundle as :func:`run_local_federation` and runs the
    ServerApp and one virtual SuperNode per client id; the ClientApps run in
    long-lived Ray workers (one CPU each), which keep TensorFlow, the model and
    the data from round to round. Needs ``pip install 'fedteach[flower]'``
    (Flower with its ``simulation`` extra, Ray). Arguments as for
    :func:`run_local_federation`; nothing is left behind either.
    """
    with LocalFederation(experiment, experiment_file=experiment_file, runtime="simulation",
                         keep_workdir=keep_workdir, verbose=verbose) as federation:
        return federation.run(num_rounds, timeout=timeout)


SUPEREXEC_POLL_SECONDS = "0.25"
"""How often a SuperExec asks for a new task to start (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``; Flower's default:
1 s). Measured with 3 clients on 2 cores: 0.25 s gave 4.0-6.2 s a round; 0.1 s, 6.4-6.8 s (four SuperExecs
asking 10 times a second slow down the ClientApps' start); 0.5 s, 5.7-6.9 s."""


class LocalFederation:
    """A local Flower federation on loopback, up for the ``with`` block; see :func:`run_local_federation`.

    Inside the block, :attr:`superlink_address` and :attr:`root_certificates`
    say where the SuperLink listens and which certificate authority signed it;
    :meth:`run` runs the experiment (more than once if you like). Leaving the
    block stops every process and removes the work folder.

    Args:
        experiment: ``"module:attribute"`` naming a :class:`FlowerExperiment`.
        experiment_file: the module's file (default: the module's ``__file__``).
        runtime: ``"deployment"`` (a SuperNode and a trainer per client) or
            ``"simulation"`` (Flower's Simulation Runtime: a SuperLink in
            simulation mode runs the ServerApp and the clients' ClientApps in
            Ray workers; one virtual SuperNode per client id).
        keep_workdir: keep the folder with the app, configs and logs.
        verbose: print the processes' logs at the end.
    """

    def __init__(self, experiment: str, *, experiment_file=None, runtime: str = "deployment",
                 keep_workdir: bool = False, verbose: bool = False):
        if runtime not in ("deployment", "simulation"):
            raise ValueError(f"runtime must be 'deployment' or 'simulation', not {runtime!r}")
        _require_flower()
        self.experiment, self.runtime = experiment, runtime
        self.exp = _resolve(experiment)
        if experiment_file is None:
            experiment_file = getattr(importlib.import_module(experiment.partition(":")[0]), "__file__", None)
        self.experiment_file = pathlib.Path(experiment_file) if experiment_file else None
        self.keep_workdir, self.verbose = keep_workdir, verbose
        self.procs, self.known, self.logs, self.node_ids = {}, set(), {}, []

    # -- the processes
    def _start(self, name, args):
        log = open(self.workdir / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen([str(self.bindir / args[0])] + args[1:], cwd=self.workdir,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        log.close()
        self.known.add(self.procs[name].pid)

    def _flwr(self, *args, timeout=120.0) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bindir / "flwr"), *args], cwd=self.workdir, env=self.env,
                              capture_output=True, text=True, timeout=timeout, start_new_session=True)

    def __enter__(self):
        from fedteach import flower_watchdog  # psutil comes with the flower extra
        self.t0 = time.perf_counter()
        self.workdir = workdir = pathlib.Path(tempfile.mkdtemp(prefix="fedteach-flower-"))
        os.chmod(workdir, 0o700)  # the clients' data, the keys and the run's files: this user only
        self.watchdog = _start_watchdog(workdir, self.keep_workdir)  # from here on, the folder goes with us
        self.bindir = pathlib.Path(sys.executable).parent
        self.flwr_home = workdir / "flwr_home"
        # Telemetry off unless the user turned it on; every process of the run carries the watchdog's marker.
        env = dict(os.environ, FLWR_HOME=str(self.flwr_home),
                   PATH=f"{self.bindir}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1",
                   FLWR_DISABLE_UPDATE_CHECK="1", TF_CPP_MIN_LOG_LEVEL="2",
                   FLWR_TELEMETRY_ENABLED=os.environ.get("FLWR_TELEMETRY_ENABLED", "0"),
                   FLWR_SUPEREXEC_TASK_POLL_INTERVAL=os.environ.get("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", SUPEREXEC_POLL_SECONDS))
        env[flower_watchdog.MARKER] = str(workdir)
        # The Simulation Runtime's Ray: its session files in the work folder, its usage statistics off.
        env.update(RAY_TMPDIR=str(workdir / "r"), RAY_USAGE_STATS_ENABLED=os.environ.get("RAY_USAGE_STATS_ENABLED", "0"),
                   RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # a single-machine Ray: its node address is 127.0.0.1
        paths = [str(self.experiment_file.parent)] if self.experiment_file else []
        env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.env = env
        try:
            self._bring_up()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _bring_up(self):
        workdir, exp = self.workdir, self.exp
        ids = list(exp.client_ids)
        self.flwr_home.mkdir()
        creds = make_credentials(workdir / "keys", 0 if self.runtime == "simulation" else len(ids))
        if self.runtime == "simulation":
            # Ray puts Unix sockets at <RAY_TMPDIR>/ray/session_<date>_<time>_<pid>/sockets/plasma_store.
            longest = len(str(workdir / "r" / "ray" / "session_2026-11-30_18-27-26_322884_2096900" / "sockets"
                              / "plasma_store"))
            if longest > 107:
                raise RuntimeError(f"Ray's socket paths under {workdir} would be {longest} bytes long, over the "
                                   "107 bytes a Unix socket's path may have: set TMPDIR to a short folder "
                                   "(e.g. TMPDIR=/tmp) and run again")
            # Ray's own token authentication, with a token made for this run.
            token = workdir / "keys" / "ray-token"
            token.touch(mode=0o600)
            token.write_text(os.urandom(32).hex())
            self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
        self.root_certificates = creds["ca"]
        tls = ["--ssl-ca-certfile", creds["ca"], "--ssl-certfile", creds["server_cert"],
               "--ssl-keyfile", creds["server_key"]]
        if self.runtime == "deployment":
            self._start_trainers(ids)
        mode = ["--simulation"] if self.runtime == "simulation" else ["--enable-supernode-auth"]
        port = _start_listening(self._start, self.procs, workdir, {"superlink": lambda port, health: [
            "flower-superlink", *tls, *mode, "--host", "127.0.0.1", "--port", str(port), "--database",
            str(workdir / "state.db"), "--disable-runtime-dependency-installation", "--health-server-address",
            f"127.0.0.1:{health}"]})["superlink"]
        self.superlink_address = f"127.0.0.1:{port}"
        options = (f"options.num-supernodes = {len(ids)}\noptions.backend.client-resources.num-cpus = 1\n"
                   if self.runtime == "simulation" else "")
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "{self.superlink_address}"\n'
            f'root-certificates = "{creds["ca"]}"\n{options}')
        if self.runtime == "deployment":
            self.node_ids = self._register(creds["node_keys"])
            data_dir = workdir / "data"
            _start_listening(self._start, self.procs, workdir, {f"supernode-{cid}": lambda port, health, i=i, cid=cid: [
                "flower-supernode", "--superlink", self.superlink_address, "--root-certificates", creds["ca"],
                "--auth-supernode-private-key", creds["node_keys"][i][0], *tls,
                "--host", "127.0.0.1", "--port", str(port), "--health-server-address", f"127.0.0.1:{health}",
                "--node-config", f'writer-id="{cid}" data-path="{data_dir / f"{i}.npz"}" '
                f'trainer-socket="{workdir / "trainers" / f"{i}.sock"}" trainer-key="{workdir / "trainers" / "key"}"']
                for i, cid in enumerate(ids)})
            self._wait_for_trainers(ids)

    def _start_trainers(self, ids):
        """Each client's data (only its own writer's examples, a file of its own) and its trainer process."""
        data_dir, trainers = self.workdir / "data", self.workdir / "trainers"
        data_dir.mkdir()
        trainers.mkdir()
        (trainers / "key").touch(mode=0o600)
        (trainers / "key").write_bytes(os.urandom(32))
        for i, cid in enumerate(ids):
            np.savez(data_dir / f"{i}.npz", **self.exp.client_data.client_arrays(cid))
            self._start(f"trainer-{cid}", [pathlib.Path(sys.executable).name, "-m", "fedteach.flower_trainer",
                                           self.experiment, cid, str(data_dir / f"{i}.npz"),
                                           str(trainers / f"{i}.sock"), str(trainers / "key")])

    def _wait_for_trainers(self, ids, timeout=180.0):
        deadline = time.monotonic() + timeout
        for i, cid in enumerate(ids):
            name = f"trainer-{cid}"
            while not (self.workdir / "trainers" / f"{i}.sock").exists():
                if self.procs[name].poll() is not None or time.monotonic() > deadline:
                    log = (self.workdir / f"{name}.log").read_text(errors="replace")
                    raise RuntimeError(f"{name} did not start; its log ends:\n{log[-3000:]}")
                time.sleep(0.1)

    def _register(self, node_keys) -> list[int]:
        """Registers each SuperNode's public key with the SuperLink (``flwr supernode register``); node ids."""
        calls = [subprocess.Popen([str(self.bindir / "flwr"), "supernode", "register", public, "local",
                                   "--format", "json"], cwd=self.workdir, env=self.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
                 for _, public in node_keys]
        ids = []
        for call in calls:
            out, _ = call.communicate(timeout=120)
            try:
                plain = re.sub(r"\x1b\[[0-9;]*m", "", out)  # (rich colours its JSON where a kernel forces colour)
                ids.append(int(json.loads(plain[plain.index("{"):])["node-id"]))
            except (ValueError, KeyError):
                raise RuntimeError(f"could not register a SuperNode's key with the SuperLink:\n{out[-3000:]}") from None
        return ids

    def run(self, num_rounds: int | None = None, timeout: float = 600.0) -> FederationResult:
        """Runs the experiment on this federation (``flwr run``); the per-round results.

        The returned result's ``pids`` and ``seconds`` are complete once the
        ``with`` block has ended (they then count every process of the
        federation, and the time until the last one was gone).
        """
        rounds = int(num_rounds or self.exp.num_rounds)
        tag = f"run{len([k for k in self.logs if k.startswith('flwr run')])}"
        result_path = self.workdir / f"{tag}-result.json"
        _write_app(self.workdir / tag, self.experiment, self.experiment_file, rounds, result_path)
        config = f'node-ids="{" ".join(map(str, self.node_ids))}"'
        cli = self._flwr("run", str(self.workdir / tag), "local", "--stream", "--run-config", config,
                         timeout=timeout)
        self.logs[f"flwr run {tag}"] = cli.stdout + cli.stderr
        deadline = time.monotonic() + 30
        while not result_path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not result_path.exists():
            raise RuntimeError("the Flower run produced no result; flwr run said:\n" + cli.stdout[-4000:]
                               + cli.stderr[-4000:] + "\n\nSuperLink log:\n"
                               + (self.workdir / "superlink.log").read_text()[-4000:])
        self.result = FederationResult(json.loads(result_path.read_text())["rounds"], 0.0, [], str(self.workdir),
                                       self.logs)
        return self.result

    def __exit__(self, *exc):
        _stop(self.procs, self.known)
        for name in self.procs:
            self.logs[name] = (self.workdir / f"{name}.log").read_text(errors="replace")
        if self.verbose:
            for name, text in self.logs.items():
                print(f"----- {name}\n{text}")
        self.known.update(self.watchdog.finish())  # every process that ran, the short-lived ones included
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        result = getattr(self, "result", None)
        if result is not None:
            result.seconds, result.pids, result.ended = time.perf_counter() - self.t0, sorted(self.known), time.time()
        return False


class _Watchdog:
    """The running :mod:`fedteach.flower_watchdog` and the process ids it has reported."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.pids = proc, set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.pids.add(int(line))

    def finish(self, timeout: float = 30.0) -> set:
        """Closes the watchdog's input (it stops what is left and removes the folder if asked); its pids."""
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._reader.join(timeout)
        return self.pids


def _start_watchdog(workdir: pathlib.Path, keep_workdir: bool) -> _Watchdog:
    """Starts :mod:`fedteach.flower_watchdog` in a session of its own: it outlives this process, however this
    process ends (its input then closes)."""
    script = pathlib.Path(__file__).with_name("flower_watchdog.py")  # run as a file: it needs no TensorFlow
    proc = subprocess.Popen([sys.executable, str(script), str(workdir), "keep" if keep_workdir else "remove"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    return _Watchdog(proc)


def _start_listening(start, procs: dict, workdir: pathlib.Path, commands: dict, tries: int = 3) -> dict:
    """Starts every ``name`` of ``commands`` with ``commands[name](port, health_port)``, all at once, and waits
    until each listens on its port; one that another program's port-taking made exit ("already in use") is
    started again with new ports. Returns each name's port."""
    ports = {}
    for name, args_for in commands.items():
        ports[name] = _free_ports(2)
        start(name, args_for(*ports[name]))
    for name, args_for in commands.items():
        for attempt in range(tries):
            try:
                _wait_for_port(ports[name][0], procs[name], timeout=60)
                break
            except RuntimeError as error:
                log = (workdir / f"{name}.log").read_text(errors="replace")
                if "already in use" not in log or attempt == tries - 1:
                    raise RuntimeError(f"{name}: {error}; its log ends:\n{log[-3000:]}") from None
                ports[name] = _free_ports(2)
                start(name, args_for(*ports[name]))
    return {name: port for name, (port, _) in ports.items()}


def _wait_for_port(port: int, proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the process exited early with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def main(argv=None) -> int:
    """``python -m fedteach.flower module:experiment [--rounds N] [--simulation-runtime]``: a local federation."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m fedteach.flower", description=main.__doc__)
    parser.add_argument("experiment", help='"module:attribute" naming a fedteach.flower.FlowerExperiment')
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--compare", action="store_true", help="also run fedteach's simulation and compare")
    parser.add_argument("--simulation-runtime", action="store_true",
                        help="run on Flower's Simulation Runtime instead of a local deployment")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.getcwd())
    run = run_simulation_runtime if args.simulation_runtime else run_local_federation
    result = run(args.experiment, num_rounds=args.rounds, verbose=args.verbose)
    for r in result.rounds:
        print(f"round {r['round']}: {r['metrics']}  {r['seconds']:.2f}s  "
              f"{r['bytes_down']} B down, {r['bytes_up']} B up")
    if args.compare:
        exp = dataclasses.replace(_resolve(args.experiment), num_rounds=len(result.rounds))
        print(comparison_table(simulate_experiment(exp), result.rounds))
    return 0


if __name__ == "__main__":  # pragma: no cover
    from fedteach.flower import main as _main  # the importable module's classes, not __main__'s copies
    sys.exit(_main())
