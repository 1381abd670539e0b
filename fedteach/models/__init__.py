"""Models: the Model interface and Keras wrapping."""
from fedteach.models.keras_model import KerasModel, from_compiled_keras_model, from_keras_model
from fedteach.models.model import BatchOutput, Model

__all__ = ["BatchOutput", "KerasModel", "Model", "from_compiled_keras_model", "from_keras_model"]
