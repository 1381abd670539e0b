"""`ClientData`: a federated dataset, one `tf.data.Dataset` per client.

The interface follows TensorFlow Federated's `ClientData` as used in the
"Federated Learning for Image Classification" tutorial (`client_ids`,
`element_spec`, `create_tf_dataset_for_client`, `preprocess`), plus fast
access to one client's raw NumPy arrays for the fast round engine.
"""

from __future__ import annotations

import difflib
import math
import mmap
import os
from collections.abc import Callable, Mapping, Sequence

import h5py
import numpy as np
import tensorflow as tf


from fedteach.data.pipeline import ClientDataset

Arrays = dict[str, np.ndarray]
DatasetFn = Callable[[tf.data.Dataset], tf.data.Dataset]


class UnknownClientError(KeyError, ValueError):
    """A client id that the `ClientData` does not contain.

    It is both a `KeyError` (a failed lookup) and a `ValueError` (a bad
    argument), so either `except` clause catches it.

    Example:
        >>> error = UnknownClientError('writer_01', ['writer_001', 'writer_002'])
        >>> print(error)  # doctest: +NORMALIZE_WHITESPACE
        Unknown client id 'writer_01': this ClientData has 2 clients.
        Did you mean 'writer_001' or 'writer_002'? Pick ids from `client_data.client_ids`.
    """

    def __init__(self, client_id: object, client_ids: Sequence[str]):
        close = difflib.get_close_matches(str(client_id), client_ids, n=3, cutoff=0.6)
        if close:
            hint = 'Did you mean ' + ' or '.join(repr(c) for c in close) + '? '
        else:
            hint = f'The first ids are {list(client_ids[:3])}. '
        super().__init__(
            f'Unknown client id {client_id!r}: this ClientData has '
            f'{len(client_ids)} clients. {hint}'
            'Pick ids from `client_data.client_ids`.'
        )
        self.client_id = client_id

    def __str__(self) -> str:  # KeyError would wrap the message in quotes.
        return str(self.args[0])


class ClientData:
    """A federated dataset: the examples of each client, by client id.

    Build one with `ClientData.from_h5`, `ClientData.from_arrays` or
    `ClientData.from_partition` rather than calling the constructor.

    Args:
        client_ids: the client ids, in the order `client_ids` reports them.
        read_arrays: returns the raw arrays (field name -> array whose first
            axis indexes the examples) of one known client id.
        count_examples: returns the number of examples of one known client id
            without reading them.
        raw_spec: the `tf.TensorSpec` of one raw example, by field name.
        preprocess_fn: applied to every client dataset, or None.

    Example:
        >>> cd = ClientData.from_arrays({'a': {'x': np.zeros((2, 3), np.float32)}})
        >>> cd
        ClientData(1 clients, 2 examples, element_spec={'x': TensorSpec(shape=(3,), dtype=tf.float32, name=None)})
    """

    def __init__(
        self,
        client_ids: Sequence[str],
        read_arrays: Callable[[str], Arrays],
        count_examples: Callable[[str], int],
        raw_spec: dict[str, tf.TensorSpec],
        preprocess_fn: DatasetFn | None = None,
    ):
        self._client_ids = list(client_ids)
        self._known = frozenset(self._client_ids)
        self._read_arrays = read_arrays
        self._count_examples = count_examples
        self._raw_spec = raw_spec
        self._preprocess_fn = preprocess_fn
        self._element_spec = None if preprocess_fn else raw_spec

    # ----------------------------------------------------------- constructors
    @classmethod
    def from_arrays(cls, clients: Mapping[str, Mapping[str, np.ndarray]]) -> ClientData:
        """Builds a `ClientData` from in-memory arrays, one dict per client.

        Every client must have the same field names, and each field the same
        dtype and per-example shape for every client. Within a client all
        fields must hold the same number of examples (zero is allowed).
        Client ids keep the order of `clients`.

        Args:
            clients: client id -> {field name -> array, first axis = examples}.

        Returns:
            The `ClientData`; `client_arrays` returns read-only views of the
            given arrays (no copy).

        Raises:
            ValueError: no clients, a non-string id, or fields, shapes, dtypes
                or sizes that disagree (the message names client and field).

        Example:
            >>> cd = ClientData.from_arrays({
            ...     'alice': {'label': np.array([1, 2], np.int32),
            ...               'pixels': np.ones((2, 28, 28), np.float32)},
            ...     'bob': {'label': np.array([3], np.int32),
            ...             'pixels': np.zeros((1, 28, 28), np.float32)},
            ... })
            >>> cd.client_ids, cd.num_examples('alice')
            (['alice', 'bob'], 2)
        """
        if not clients:
            raise ValueError(
                'ClientData.from_arrays got no clients; pass a dict '
                "{client_id: {'pixels': array, 'label': array}} with at least one client."
            )
        store: dict[str, Arrays] = {}
        reference_id, reference = None, None
        for client_id, fields in clients.items():
            if not isinstance(client_id, str):
                raise ValueError(
                    f'Client ids must be strings, got {client_id!r} '
                    f'({type(client_id).__name__}); convert them with str().'
                )
            arrays = {name: _read_only(np.asarray(value)) for name, value in fields.items()}
            _check_sizes(client_id, arrays)
            if reference is None:
                if not arrays:
                    raise ValueError(f'Client {client_id!r} has no fields; give it at least one array.')
                reference_id, reference = client_id, arrays
            else:
                _check_like(client_id, arrays, reference_id, reference)
            store[client_id] = arrays
        raw_spec = {
            name: tf.TensorSpec(a.shape[1:], tf.as_dtype(a.dtype)) for name, a in reference.items()
        }
        return cls(
            list(store),
            store.__getitem__,
            lambda client_id: len(next(iter(store[client_id].values()))),
            raw_spec,
        )

    @classmethod
    def from_partition(
        cls,
        arrays: Mapping[str, np.ndarray],
        partition: Mapping[str, Sequence[int]] | Sequence[Sequence[int]],
    ) -> ClientData:
        """Builds clients from a partition of one central dataset.

        Args:
            arrays: field name -> array whose first axis indexes all examples,
                e.g. `{'pixels': x_train, 'label': y_train}`.
            partition: client id -> example indices (as the `partition_*`
                functions return), or a list of index arrays, whose clients
                are then named 'client_000', 'client_001', ...

        Returns:
            A `ClientData` holding a copy of each client's examples.

        Raises:
            ValueError: fields of different lengths or out-of-range indices.

        Example:
            >>> labels = np.array([0, 1, 0, 1], np.int32)
            >>> cd = ClientData.from_partition({'label': labels}, [[0, 2], [1, 3]])
            >>> cd.client_ids, cd.client_arrays('client_001')['label']
            (['client_000', 'client_001'], array([1, 1], dtype=int32))
        """
        arrays = {name: np.asarray(a) for name, a in arrays.items()}
        lengths = {name: len(a) for name, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f'All fields of a central dataset must have the same length, got {lengths}.'
            )
        num_examples = next(iter(lengths.values()), 0)
        if not isinstance(partition, Mapping):
            width = max(3, len(str(len(partition) - 1)))
            partition = {f'client_{i:0{width}d}': idx for i, idx in enumerate(partition)}
        clients = {}
        for client_id, indices in partition.items():
            indices = np.asarray(indices, dtype=np.int64).reshape(-1)
            if indices.size and (indices.min() < 0 or indices.max() >= num_examples):
                raise ValueError(
                    f'Client {client_id!r} has example indices outside [0, {num_examples}): '
                    f'min {indices.min()}, max {indices.max()}. The partition must index '
                    'the given arrays.'
                )
            clients[client_id] = {name: a[indices] for name, a in arrays.items()}
        return cls.from_arrays(clients)

    @classmethod
    def from_h5(cls, path: str | os.PathLike) -> ClientData:
        """Opens a federated HDF5 file in TensorFlow Federated's layout.

        The layout is `examples/<client_id>/<field>`, e.g. `label` (int32 [n])
        and `pixels` (float32 [n, 28, 28]) for federated EMNIST. The file stays
        open: opening finds where each client's arrays lie (~0.15 s for
        federated EMNIST's 3,383 writers) and a client is read only when asked
        for, in microseconds. Client ids are sorted, as in TFF.

        Args:
            path: the .h5 file.

        Returns:
            The `ClientData`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file lacks the `examples` group or any client.

        Example:
            >>> import tempfile, pathlib
            >>> from fedteach.data.synthetic import make_emnist_like_clients, write_emnist_h5
            >>> path = pathlib.Path(tempfile.mkdtemp()) / 'train.h5'
            >>> write_emnist_h5(path, make_emnist_like_clients(3, 4, seed=0))
            >>> cd = ClientData.from_h5(path)
            >>> len(cd), cd.num_examples(cd.client_ids[0])
            (3, 4)
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'No HDF5 file at {path!r}.')
        h5 = h5py.File(path, 'r')
        if 'examples' not in h5 or not len(h5['examples']):
            h5.close()
            raise ValueError(
                f'{path!r} is not a federated HDF5 file: expected clients under the '
                "group 'examples' (examples/<client_id>/<field>), as TFF writes them."
            )
        client_ids = sorted(h5['examples'])
        first = h5['examples'][client_ids[0]]
        raw_spec = {
            name: tf.TensorSpec(first[name].shape[1:], tf.as_dtype(first[name].dtype))
            for name in first
        }
        clients = _H5Clients(h5, path, client_ids, list(raw_spec))
        return cls(client_ids, clients.read, clients.count, raw_spec)

    # ---------------------------------------------------------------- access
    @property
    def client_ids(self) -> list[str]:
        """The client ids, in a stable order.

        Example:
            >>> ClientData.from_partition({'y': np.arange(4)}, [[0], [1, 2, 3]]).client_ids
            ['client_000', 'client_001']
        """
        return list(self._client_ids)

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        """The `tf.TensorSpec` structure of one element of a client dataset.

        After `preprocess(fn)` this is the spec of `fn`'s output.

        Example:
            >>> cd = ClientData.from_arrays({'a': {'label': np.zeros(2, np.int32)}})
            >>> cd.element_spec
            {'label': TensorSpec(shape=(), dtype=tf.int32, name=None)}
            >>> cd.preprocess(lambda ds: ds.batch(5)).element_spec
            {'label': TensorSpec(shape=(None,), dtype=tf.int32, name=None)}
        """
        if self._element_spec is None:
            empty = tf.data.Dataset.from_tensor_slices(
                {
                    name: np.zeros((0, *spec.shape), spec.dtype.as_numpy_dtype)
                    for name, spec in self._raw_spec.items()
                }
            )
            self._element_spec = self._preprocess_fn(empty).element_spec
        return self._element_spec

    @property
    def preprocess_fn(self) -> DatasetFn | None:
        """The function applied to every client dataset, or None when raw.

        Example:
            >>> ClientData.from_arrays({'a': {'y': np.zeros(1)}}).preprocess_fn is None
            True
        """
        return self._preprocess_fn

    def client_arrays(self, client_id: str) -> Arrays:
        """The raw arrays of one client (before any `preprocess` function).

        Args:
            client_id: one of `client_ids`.

        Returns:
            Field name -> NumPy array, first axis = examples. Treat them as
            read-only.

        Raises:
            UnknownClientError: `client_id` is not a client of this dataset.

        Example:
            >>> cd = ClientData.from_arrays({'a': {'label': np.array([7, 3], np.int32)}})
            >>> cd.client_arrays('a')
            {'label': array([7, 3], dtype=int32)}
        """
        self._check_known(client_id)
        return self._read_arrays(client_id)

    def num_examples(self, client_id: str) -> int:
        """The number of examples of one client, without reading them.

        Example:
            >>> ClientData.from_arrays({'a': {'y': np.zeros(5)}}).num_examples('a')
            5
        """
        self._check_known(client_id)
        return int(self._count_examples(client_id))

    def create_tf_dataset_for_client(self, client_id: str) -> tf.data.Dataset:
        """The examples of one client as a `tf.data.Dataset` (then preprocessed).

        Without `preprocess`, each element is one example, a dict of tensors
        matching `element_spec`, e.g. `{'label': int32[], 'pixels': float32[28, 28]}`.

        Raises:
            UnknownClientError: `client_id` is not a client of this dataset.

        Example:
            >>> cd = ClientData.from_arrays({'a': {'label': np.array([7, 3], np.int32)}})
            >>> [int(e['label']) for e in cd.create_tf_dataset_for_client('a')]
            [7, 3]
        """
        dataset = ClientDataset(self.client_arrays(client_id), client_id=client_id)
        return self._preprocess_fn(dataset) if self._preprocess_fn else dataset

    def preprocess(self, fn: DatasetFn) -> ClientData:
        """A new `ClientData` whose client datasets are `fn(dataset)`.

        Preprocessing composes: `cd.preprocess(f).preprocess(g)` gives
        `g(f(dataset))`. `client_arrays` keeps returning the raw arrays.

        Example:
            >>> cd = ClientData.from_arrays({'a': {'y': np.arange(5)}})
            >>> batched = cd.preprocess(lambda ds: ds.batch(2))
            >>> [len(b['y']) for b in batched.create_tf_dataset_for_client('a')]
            [2, 2, 1]
        """
        if not callable(fn):
            raise TypeError(
                f'preprocess expects a function dataset -> dataset, got {type(fn).__name__}.'
            )
        previous = self._preprocess_fn
        composed = fn if previous is None else (lambda dataset: fn(previous(dataset)))
        return ClientData(
            self._client_ids, self._read_arrays, self._count_examples, self._raw_spec, composed
        )

    def __len__(self) -> int:
        return len(self._client_ids)

    def __repr__(self) -> str:
        total = sum(self._count_examples(c) for c in self._client_ids)
        preprocessed = ', preprocessed' if self._preprocess_fn else ''
        return (
            f'ClientData({len(self)} clients, {total} examples{preprocessed}, '
            f'element_spec={self.element_spec})'
        )

    def _check_known(self, client_id: str) -> None:
        if client_id not in self._known:
            raise UnknownClientError(client_id, self._client_ids)


class _H5Clients:
    """Reads clients of an open federated HDF5 file.

    Every client's fields are located when the file is opened (HDF5 lookups,
    ~40 us per client, ~0.15 s for federated EMNIST's 3,383 writers). A field
    stored contiguously and uncompressed, as TFF's files and `write_emnist_h5`
    store them, is then read as a read-only view of a memory map of the file:
    no HDF5 call and no copy. Other fields (chunked, compressed) are read
    through h5py.
    """

    def __init__(self, h5: h5py.File, path: str, client_ids: list[str], fields: list[str]):
        self._h5 = h5  # keeps the file open
        self._map = np.memmap(path, np.uint8, 'r')
        examples = h5py.h5g.open(h5.id, b'examples')
        names = [name.encode() for name in fields]
        # client id -> [(field, shape, dtype, offset or h5py dataset)]
        self._located = {c: self._locate(h5py.h5g.open(examples, c.encode()), names) for c in client_ids}

    @staticmethod
    def _locate(group, names: list[bytes]) -> list:
        located = []
        for name in names:
            dataset = h5py.h5d.open(group, name)
            offset = dataset.get_offset()
            located.append((name.decode(), dataset.shape, dataset.dtype, dataset if offset is None else offset,
                            math.prod(dataset.shape)))
        return located

    def read(self, client_id: str) -> Arrays:
        arrays = {}
        for name, shape, dtype, where, size in self._located[client_id]:
            if isinstance(where, int):
                arrays[name] = np.frombuffer(self._map, dtype, size, where).reshape(shape)
            else:  # chunked or compressed, or empty (no storage)
                array = np.empty(shape, dtype)
                if array.size:
                    where.read(h5py.h5s.ALL, h5py.h5s.ALL, array)
                arrays[name] = _read_only(array)
        return arrays

    def count(self, client_id: str) -> int:
        return self._located[client_id][0][1][0]


def release_mapped_pages(arrays) -> None:
    """Lets the pages of memory-mapped arrays (views of an HDF5 file's map) leave this process's resident memory.

    The kernel keeps the file's pages in its cache; the next read maps them
    again. The fast engine calls this after each group of a round too large
    for its memory budget, so that a round over every client of a 1 GiB file
    does not keep the whole file resident. Arrays that are not memory-mapped
    are left alone.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), 'a.npy')
        >>> np.save(path, np.ones(100_000, np.float32))
        >>> mapped = np.load(path, mmap_mode='r')
        >>> float(mapped.sum())
        100000.0
        >>> release_mapped_pages([mapped[10:], np.zeros(3)])
        >>> float(mapped.sum())  # read again from the page cache
        100000.0
    """
    for array in arrays:
        base = array  # the memmap that np.memmap made on the mmap (its slices are memmaps too)
        while isinstance(base, np.ndarray) and not isinstance(base.base, mmap.mmap):
            base = base.base
        if not isinstance(base, np.memmap) or not array.nbytes:
            continue
        # np.memmap maps from `offset` rounded down to the allocation granularity
        mapped_start = base.ctypes.data - base.offset % mmap.ALLOCATIONGRANULARITY
        start = array.ctypes.data - mapped_start
        first = start - start % mmap.PAGESIZE
        base.base.madvise(mmap.MADV_DONTNEED, first, start + array.nbytes - first)


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def _check_sizes(client_id: str, arrays: Arrays) -> None:
    for name, array in arrays.items():
        if array.ndim == 0:
            raise ValueError(
                f'Client {client_id!r}, field {name!r}: expected an array whose first '
                f'axis indexes the examples, got a scalar {array!r}.'
            )
    sizes = {name: len(a) for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f'Client {client_id!r}: all fields must hold the same number of examples, '
            f'got {sizes}.'
        )


def _check_like(client_id: str, arrays: Arrays, reference_id: str, reference: Arrays) -> None:
    if arrays.keys() != reference.keys():
        raise ValueError(
            f'Client {client_id!r} has fields {sorted(arrays)} but client '
            f'{reference_id!r} has {sorted(reference)}; every client needs the same fields.'
        )
    for name, array in arrays.items():
        expected = reference[name]
        if array.shape[1:] != expected.shape[1:] or array.dtype != expected.dtype:
            raise ValueError(
                f'Client {client_id!r}, field {name!r}: examples of shape {array.shape[1:]} '
                f'and dtype {array.dtype}, but client {reference_id!r} has shape '
                f'{expected.shape[1:]} and dtype {expected.dtype}; convert them to match '
                f'(e.g. np.asarray(x, np.{expected.dtype})).'
            )
