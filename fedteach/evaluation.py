"""Federated and centralized evaluation of a model's weights."""
from __future__ import annotations

import warnings

import numpy as np

from fedteach.rounds import fast
from fedteach.rounds.general import ClientRunner
from fedteach.rounds.process import (Computation, aggregate_trusted, check_client_datasets, check_model_fn,
                                     client_name, clients_data_type, function_type, metrics_type, server_type)
from fedteach.rounds.state import ModelWeights, RoundMetrics, ServerState


def build_federated_evaluation(model_fn) -> Computation:
    """Builds ``evaluation(model_weights, federated_data) -> metrics``.

    Every client runs the forward pass over its data with the given weights
    (no training); the model's metric aggregation combines the clients'
    metrics, weighted by their examples. ``model_weights`` is ``state.model``
    (a whole ``ServerState`` is accepted too).

    Example:
        >>> import fedteach as ft, keras, tensorflow as tf
        >>> spec = {'x': tf.TensorSpec([None, 784], tf.float32), 'y': tf.TensorSpec([None, 1], tf.int32)}
        >>> def model_fn():
        ...     net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation='softmax')])
        ...     return ft.from_keras_model(net, 'sparse_categorical_crossentropy', spec, metrics=['accuracy'])
        >>> evaluation = ft.build_federated_evaluation(model_fn)
        >>> str(evaluation.type_signature)
        '(<<trainable=<dense/kernel=float32[784,10],dense/bias=float32[10]>,non_trainable=<>>@SERVER,{<x=float32[?,784],y=int32[?,1]>*}@CLIENTS> -> <accuracy=float32@SERVER,loss=float32@SERVER,num_examples=int64@SERVER>)'
    """
    model = check_model_fn(model_fn)
    runner = ClientRunner(model)
    template = runner.weights()
    result_type = metrics_type(model, model.report_local_outputs())
    # The fast engine's layout serves evaluation too: one compiled forward pass for all clients.
    evaluator = fast.FastEvaluator(model) if fast.unsupported_model(model) is None else None

    def fast_possible(federated_data):
        return evaluator is not None and all(fast.unsupported_pipeline(ds) is None for ds in federated_data)

    def evaluation(model_weights, federated_data) -> RoundMetrics:
        weights = model_weights.model if isinstance(model_weights, ServerState) else model_weights
        if not isinstance(weights, ModelWeights):
            raise TypeError(f"evaluation expects state.model (ModelWeights), got {type(model_weights).__name__}")
        if list(weights.trainable) != list(template.trainable) or any(
                np.shape(a) != np.shape(b) for a, b in zip(weights.trainable.values(), template.trainable.values())):
            raise ValueError("these weights belong to a different model: they are "
                             f"{ {k: np.shape(v) for k, v in weights.trainable.items()} } but the evaluation's model "
                             f"has { {k: np.shape(v) for k, v in template.trainable.items()} }. Build the evaluation "
                             "with the same model_fn as the training process.")
        federated_data = list(federated_data)
        if not federated_data:
            raise ValueError("evaluation needs at least one client: federated_data is empty. Pass a list with "
                             "one dataset per client, e.g. ft.make_federated_data(test_data, ids, preprocess).")
        fast_path = fast_possible(federated_data)
        check_client_datasets(model, federated_data, check_specs=not fast_path)
        if fast_path:
            results = [(int(out["num_examples"]), out) for out in evaluator.outputs(weights, federated_data)]
        else:
            results = [runner.evaluate(weights, ds) for ds in federated_data]
        outputs = [out for n, out in results if n > 0]
        if not outputs:
            raise ValueError("every client's dataset is empty: nothing to evaluate. Check the client ids and "
                             "the preprocess function (e.g. batch with drop_remainder).")
        empty = [client_name(ds, i) for i, (ds, (n, _)) in enumerate(zip(federated_data, results)) if n == 0]
        if empty:
            warnings.warn(f"evaluation: skipped {len(empty)} client(s) with no examples: {', '.join(empty)}.",
                          stacklevel=2)
        aggregate = model.federated_output_computation
        if fast_path:  # the fast evaluator builds its outputs in the type the aggregation is bound to
            return RoundMetrics(aggregate_trusted(aggregate, outputs))
        return RoundMetrics(aggregate(outputs))

    signature = function_type([server_type(template), clients_data_type(model)], result_type)
    return Computation(evaluation, signature, "evaluation")


def assign_weights_to_keras_model(keras_model, model_weights) -> None:
    """Loads federated weights (``state.model``) into a Keras model for centralized ``evaluate()``.

    Example:
        >>> import keras, numpy as np
        >>> net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> w = ModelWeights.from_lists([np.ones((2, 1), 'float32'), np.zeros(1, 'float32')], [],
        ...                             ['dense/kernel', 'dense/bias'])
        >>> assign_weights_to_keras_model(net, w)
        >>> net.predict(np.ones((1, 2)), verbose=0).tolist()
        [[2.0]]
    """
    weights = model_weights.model if isinstance(model_weights, ServerState) else model_weights
    variables = list(keras_model.trainable_variables)
    arrays = list(weights.trainable.values())
    if len(variables) != len(arrays) or any(tuple(v.shape) != np.shape(a) for v, a in zip(variables, arrays)):
        raise ValueError(
            "the weights do not fit this Keras model: it has "
            f"{[tuple(v.shape) for v in variables]} but the weights have {[np.shape(a) for a in arrays]}.")
    for v, a in zip(variables, arrays):
        v.assign(a)
    others = [v for v in keras_model.non_trainable_variables if "seed_generator" not in v.path]
    for v, a in zip(others, weights.non_trainable.values()):
        v.assign(a)
