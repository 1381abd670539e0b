"""Placements: where a federated value lives (on the server or on the clients)."""

import enum


class Placement(enum.Enum):
    """Where a federated value lives.

    There are exactly two placements, exported as ``SERVER`` and ``CLIENTS``.
    They print as their bare names, as in the TFF tutorials.

    Example:
        >>> print(SERVER, CLIENTS)
        SERVER CLIENTS
        >>> SERVER is Placement.SERVER
        True
    """

    SERVER = "SERVER"
    CLIENTS = "CLIENTS"

    def __str__(self):
        return self.value

    def __repr__(self):
        return self.value


SERVER = Placement.SERVER
CLIENTS = Placement.CLIENTS


class PlacementError(TypeError):
    """A federated operation was given a value at the wrong placement.

    Example:
        >>> from fedteach.federated import federated_sum, federated_value
        >>> federated_sum(federated_value(1.0, SERVER))
        Traceback (most recent call last):
        ...
        fedteach.federated.placements.PlacementError: federated_sum expects a value placed at CLIENTS, got float32@SERVER. Hint: federated_sum adds up the clients' values onto the server; a SERVER value is already aggregated.
    """
