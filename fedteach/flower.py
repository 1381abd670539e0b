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
  holding only its own writer's examples, runs the experiment on it with
  ``flwr run`` and stops every process it started.
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

__all__ = ["FlowerExperiment", "FederationResult", "to_flower_apps", "run_local_federation",
           "simulate_experiment", "comparison_table"]


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
def _weights_to_record(weights):
    from flwr.app import Array, ArrayRecord
    items = [("trainable/" + k, v) for k, v in weights.trainable.items()]
    items += [("non_trainable/" + k, v) for k, v in weights.non_trainable.items()]
    return ArrayRecord(collections.OrderedDict((k, Array(np.ascontiguousarray(v))) for k, v in items))


def _record_to_weights(record, template):
    from fedteach.rounds.state import ModelWeights
    return ModelWeights(
        collections.OrderedDict((k, record["trainable/" + k].numpy().astype(v.dtype).reshape(v.shape))
                                for k, v in template.trainable.items()),
        collections.OrderedDict((k, record["non_trainable/" + k].numpy().astype(v.dtype).reshape(v.shape))
                                for k, v in template.non_trainable.items()))


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
    data and replies with its model (ArrayRecord) and a MetricRecord holding
    ``num-examples`` (examples x local epochs, FedAvg's weight) and its metric
    states. The ServerApp runs Flower's FedAvg strategy, then applies the
    average update with fedteach's server optimizer and finalizes the metrics
    with the model's ``federated_output_computation``.
    """
    _require_flower()
    from flwr.app import Message, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    client_app, server_app = ClientApp(), ServerApp()

    @client_app.train()
    def train(msg, context):
        exp = _resolve(experiment, context)
        key = ("runner", id(exp))
        if key not in _CACHE:
            from fedteach.rounds.general import ClientRunner
            from fedteach.rounds.process import check_model_fn
            _CACHE[key] = ClientRunner(check_model_fn(exp.model_fn), exp.client_optimizer_fn())
        runner = _CACHE[key]
        dataset, _ = _client_dataset(exp, context.node_config)
        weights = _record_to_weights(msg.content["arrays"], runner.weights())
        new_weights, n, outputs = runner.train(weights, dataset)
        from flwr.app import MetricRecord
        content = RecordDict({"arrays": _weights_to_record(new_weights),
                              "metrics": MetricRecord(_outputs_to_metrics(n, outputs))})
        return Message(content=content, reply_to=msg)

    @server_app.main()
    def main(grid, context):
        exp = _resolve(experiment, context)
        num_rounds = int(context.run_config.get("num-rounds", exp.num_rounds))
        strategy = _make_strategy(exp)
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


def _make_strategy(exp):
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
            messages = list(super().configure_train(server_round, arrays, config, grid))
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


_APP_SOURCE = '''"""Generated by fedteach.flower: Flower's entry points for a fedteach experiment."""
from fedteach.flower import to_flower_apps

_apps = to_flower_apps()  # the experiment is named by the run config key "experiment"
server_app = _apps[0]
client_app = _apps[1]
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
clientapp = "{_APP_MODULE}:client_app"

[tool.flwr.app.config]
experiment = "{experiment}"
num-rounds = {int(num_rounds)}
result-path = "{result_path}"
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


def run_local_federation(experiment: str, *, num_rounds: int | None = None, experiment_file=None,
                         timeout: float = 600.0, keep_workdir: bool = False, verbose: bool = False
                         ) -> FederationResult:
    """Runs ``experiment`` on a real local Flower federation on loopback, then stops it.

    Starts one ``flower-superlink`` (the server; it starts the ServerApp in a
    process of its own) and one ``flower-supernode`` per client id (each starts
    its ClientApp in a process of its own), all ``--insecure`` on 127.0.0.1
    with free ports. Each SuperNode gets its writer id and a file holding only
    that writer's examples through ``--node-config``. The experiment is sent as
    a Flower App Bundle with ``flwr run``; the ServerApp writes the per-round
    results to a file that this function reads.

    Nothing is left behind: a watchdog process (:mod:`fedteach.flower_watchdog`)
    stops every process of the run and removes its work folder (the clients'
    data, readable by this user only) when this function returns, and also
    when the process that called it dies (a Jupyter kernel restarted or
    killed). Flower's telemetry is off unless ``FLWR_TELEMETRY_ENABLED`` is
    set. A process whose port another program took first is started again
    with new ports.

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
    _require_flower()
    exp = _resolve(experiment)
    module_name = experiment.partition(":")[0]
    if experiment_file is None:
        experiment_file = getattr(importlib.import_module(module_name), "__file__", None)
    experiment_file = pathlib.Path(experiment_file) if experiment_file else None
    rounds = int(num_rounds or exp.num_rounds)

    from fedteach import flower_watchdog  # psutil comes with the flower extra
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="fedteach-flower-"))
    os.chmod(workdir, 0o700)  # the clients' data and the run's files: this user only
    watchdog = _start_watchdog(workdir, keep_workdir)  # from here on, the folder goes with this process
    result_path = workdir / "result.json"
    data_dir, flwr_home = workdir / "data", workdir / "flwr_home"
    bindir = pathlib.Path(sys.executable).parent
    # Telemetry off unless the user turned it on; every process of the run carries the watchdog's marker.
    env = dict(os.environ, FLWR_HOME=str(flwr_home), PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONUNBUFFERED="1", FLWR_DISABLE_UPDATE_CHECK="1", TF_CPP_MIN_LOG_LEVEL="2",
               FLWR_TELEMETRY_ENABLED=os.environ.get("FLWR_TELEMETRY_ENABLED", "0"))
    env[flower_watchdog.MARKER] = str(workdir)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(experiment_file.parent)] if experiment_file else []) + (os.pathsep + env["PYTHONPATH"]
                                                                       if env.get("PYTHONPATH") else "")
    procs, known, logs = {}, set(), {}

    def start(name, args):
        log = open(workdir / f"{name}.log", "w")
        procs[name] = subprocess.Popen([str(bindir / args[0])] + args[1:], cwd=workdir, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        known.add(procs[name].pid)

    t0 = time.perf_counter()
    try:
        _write_app(workdir / "app", experiment, experiment_file, rounds, result_path)
        flwr_home.mkdir()
        # Each client's data: only its own writer's examples, in a file of its own.
        data_dir.mkdir()
        for cid in exp.client_ids:
            np.savez(data_dir / f"{cid}.npz", **exp.client_data.client_arrays(cid))
        superlink_port = _start_listening(start, procs, workdir, {"superlink": lambda port, health: [
            "flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(port), "--database",
            str(workdir / "state.db"), "--disable-runtime-dependency-installation", "--health-server-address",
            f"127.0.0.1:{health}"]})["superlink"]
        (flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\naddress = "127.0.0.1:{superlink_port}"\n'
            'insecure = true\n')
        _start_listening(start, procs, workdir, {f"supernode-{cid}": lambda port, health, cid=cid: [
            "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{superlink_port}",
            "--host", "127.0.0.1", "--port", str(port), "--health-server-address", f"127.0.0.1:{health}",
            "--node-config", f'writer-id="{cid}" data-path="{data_dir / (cid + ".npz")}"'] for cid in exp.client_ids})
        cli = subprocess.run([str(bindir / "flwr"), "run", str(workdir / "app"), "loopback", "--stream"],
                             cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout,
                             start_new_session=True)
        logs["flwr run"] = cli.stdout + cli.stderr
        deadline = time.monotonic() + 30
        while not result_path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not result_path.exists():
            raise RuntimeError("the Flower run produced no result; flwr run said:\n" + logs["flwr run"][-4000:]
                               + "\n\nSuperLink log:\n" + (workdir / "superlink.log").read_text()[-4000:])
        result = json.loads(result_path.read_text())
    finally:
        _stop(procs, known)
        for name in procs:
            logs[name] = (workdir / f"{name}.log").read_text(errors="replace")
        if verbose:
            for name, text in logs.items():
                print(f"----- {name}\n{text}")
        known.update(watchdog.finish())  # every process that ran, the short-lived ones included
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return FederationResult(result["rounds"], time.perf_counter() - t0, sorted(known), str(workdir), logs,
                            time.time())


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
    """``python -m fedteach.flower module:experiment [--rounds N]``: a real local federation on loopback."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m fedteach.flower", description=main.__doc__)
    parser.add_argument("experiment", help='"module:attribute" naming a fedteach.flower.FlowerExperiment')
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--compare", action="store_true", help="also run fedteach's simulation and compare")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.getcwd())
    result = run_local_federation(args.experiment, num_rounds=args.rounds, verbose=args.verbose)
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
