"""Plain data that flows between rounds: model weights, server state, metrics."""
from __future__ import annotations

import collections
import dataclasses
from typing import Iterator, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class ModelWeights:
    """A model's weights as ordered dicts of NumPy arrays, keyed by variable name.

    Example:
        >>> import numpy as np
        >>> w = ModelWeights.from_lists([np.zeros((2, 3)), np.zeros(3)], [], ['dense/kernel', 'dense/bias'])
        >>> list(w.trainable), w.trainable['dense/bias'].shape
        (['dense/kernel', 'dense/bias'], (3,))
    """

    trainable: collections.OrderedDict
    non_trainable: collections.OrderedDict

    @classmethod
    def from_lists(cls, trainable, non_trainable, trainable_names, non_trainable_names=()):
        """Builds weights from lists of arrays and their names."""
        return cls(
            collections.OrderedDict((n, np.asarray(v)) for n, v in zip(trainable_names, trainable)),
            collections.OrderedDict((n, np.asarray(v)) for n, v in zip(non_trainable_names, non_trainable)),
        )

    def map(self, fn) -> "ModelWeights":
        """Applies ``fn`` to every array (e.g. ``np.copy``)."""
        return ModelWeights(
            collections.OrderedDict((k, fn(v)) for k, v in self.trainable.items()),
            collections.OrderedDict((k, fn(v)) for k, v in self.non_trainable.items()),
        )


@dataclasses.dataclass(frozen=True)
class ServerState:
    """What the server keeps between rounds: the model and the optimizer state.

    ``optimizer_state`` is a tuple of arrays; its first entry is the server
    optimizer's step counter, i.e. the number of completed rounds.

    Example:
        >>> import numpy as np
        >>> s = ServerState(ModelWeights.from_lists([], [], []), (np.int64(3),))
        >>> s.round_num
        3
    """

    model: ModelWeights
    optimizer_state: tuple

    @property
    def round_num(self) -> int:
        """Number of rounds this state has been through."""
        return int(self.optimizer_state[0]) if self.optimizer_state else 0


@dataclasses.dataclass(frozen=True)
class ScaffoldState(ServerState):
    """SCAFFOLD's server state: the model, the optimizer state and the control variates.

    ``control`` is the server's control variate ``c`` (an ordered dict of
    arrays keyed like ``model.trainable``); ``client_controls`` maps a client
    id to that client's ``c_i`` (same keys). A client not in it has never
    trained: its ``c_i`` is zero. All plain arrays, so a checkpoint keeps them.

    Example:
        >>> import collections, numpy as np
        >>> w = ModelWeights.from_lists([np.zeros(2, np.float32)], [], ['b'])
        >>> s = ScaffoldState(w, (np.int64(0),), collections.OrderedDict(b=np.zeros(2, np.float32)),
        ...                   collections.OrderedDict())
        >>> s.round_num, list(s.control), len(s.client_controls)
        (0, ['b'], 0)
    """

    control: collections.OrderedDict
    client_controls: collections.OrderedDict


def _format(value) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = f"{float(value):.6g}"
    return text if any(c in text for c in ".einf") else text + ".0"


class RoundMetrics(Mapping):
    """Metrics of a round: a read-only dict that prints like the tutorial.

    Example:
        >>> m = RoundMetrics({'accuracy': 0.1429091, 'loss': 3.140694, 'num_examples': 2750})
        >>> print(m)
        <accuracy=0.142909,loss=3.14069,num_examples=2750>
        >>> m['loss'], m.loss
        (3.140694, 3.140694)
    """

    def __init__(self, values: Mapping):
        self._values = dict(values)

    def __getitem__(self, key):
        return self._values[key]

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no metric {name!r}; available: {sorted(self._values)}") from None

    def __iter__(self) -> Iterator:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __str__(self) -> str:
        return "<" + ",".join(f"{k}={_format(v)}" for k, v in self._values.items()) + ">"

    def __repr__(self) -> str:
        return f"RoundMetrics({self._values!r})"
