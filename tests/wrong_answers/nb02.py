"""Plausible wrong answers to notebook 2's auto-graded exercises; each must score 0."""

WRONG = {
    "q1": [
        # The batch size written in: a client's last, smaller batch does not fit.
        """my_input_spec = {'x': tf.TensorSpec([20, 28, 28, 1], tf.float32), 'y': tf.TensorSpec([20], tf.int32)}
""",
        # Copied from the flattened pipeline above.
        """my_input_spec = {'x': tf.TensorSpec([None, 784], tf.float32), 'y': tf.TensorSpec([None, 1], tf.int32)}
""",
        # The images without their channel dimension.
        """my_input_spec = {'x': tf.TensorSpec([None, 28, 28], tf.float32), 'y': tf.TensorSpec([None], tf.int32)}
""",
        # Labels with a trailing dimension of 1, as in the flattened pipeline.
        """my_input_spec = {'x': tf.TensorSpec([None, 28, 28, 1], tf.float32), 'y': tf.TensorSpec([None, 1], tf.int32)}
""",
        # Labels as int64, NumPy's default integer.
        """my_input_spec = {'x': tf.TensorSpec([None, 28, 28, 1], tf.float32), 'y': tf.TensorSpec([None], tf.int64)}
""",
        # No shape at all: fits anything, describes nothing.
        """my_input_spec = {'x': tf.TensorSpec(None, tf.float32), 'y': tf.TensorSpec(None, tf.int32)}
""",
        # Every dimension left open: fits every batch, but also images of any size.
        """my_input_spec = {'x': tf.TensorSpec([None, None, None, None], tf.float32), 'y': tf.TensorSpec([None], tf.int32)}
""",
    ],
    "q2": [
        # A built model instead of a constructor.
        """def make_model_fn(learning_rate):
    return model_fn()
""",
        # A constructor that hands out the same model every time.
        """def make_model_fn(learning_rate):
    model = model_fn()
    return lambda: model
""",
        # A constructor that ignores the learning rate.
        """def make_model_fn(learning_rate):
    return model_fn
""",
        # A new model with the given rate, but not model_fn's: its weights start at random values.
        """def make_model_fn(learning_rate):
    def build():
        net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation='softmax')])
        net.compile(loss=keras.losses.SparseCategoricalCrossentropy(),
                    optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
                    metrics=[keras.metrics.SparseCategoricalAccuracy()])
        return ft.from_compiled_keras_model(net, sample_batch)
    return build
""",
    ],
}
