"""Behaviour of ClientData: the federated dataset interface of the tutorial."""


import h5py
import numpy as np
import pytest
import tensorflow as tf

from fedteach.data import ClientData, UnknownClientError, make_emnist_like_clients, write_emnist_h5

EMNIST_SPEC = {
    'label': tf.TensorSpec([], tf.int32),
    'pixels': tf.TensorSpec([28, 28], tf.float32),
}


def two_clients():
    return {
        'alice': {'label': np.array([1, 2], np.int32), 'pixels': np.ones((2, 28, 28), np.float32)},
        'bob': {'label': np.array([3], np.int32), 'pixels': np.zeros((1, 28, 28), np.float32)},
    }


def test_from_arrays_exposes_clients_in_the_given_order_with_emnist_spec():
    cd = ClientData.from_arrays(two_clients())
    assert cd.client_ids == ['alice', 'bob']
    assert len(cd) == 2
    assert cd.element_spec == EMNIST_SPEC
    assert [cd.num_examples(c) for c in cd.client_ids] == [2, 1]


def test_dataset_yields_single_examples_matching_the_arrays():
    cd = ClientData.from_arrays(two_clients())
    elements = list(cd.create_tf_dataset_for_client('alice'))
    assert [int(e['label']) for e in elements] == [1, 2]
    assert elements[0]['pixels'].shape == (28, 28)
    assert cd.create_tf_dataset_for_client('alice').element_spec == EMNIST_SPEC


def test_client_arrays_are_read_only_views_without_copy():
    clients = two_clients()
    arrays = ClientData.from_arrays(clients).client_arrays('bob')
    assert np.shares_memory(arrays['pixels'], clients['bob']['pixels'])
    with pytest.raises(ValueError):
        arrays['label'][0] = 9


def test_repr_reports_clients_examples_and_spec():
    text = repr(ClientData.from_arrays(two_clients()))
    assert text.startswith('ClientData(2 clients, 3 examples, element_spec=')
    assert 'TensorSpec(shape=(28, 28), dtype=tf.float32' in text


def test_clients_may_be_empty():
    clients = two_clients()
    clients['carol'] = {'label': np.zeros(0, np.int32), 'pixels': np.zeros((0, 28, 28), np.float32)}
    cd = ClientData.from_arrays(clients)
    assert cd.num_examples('carol') == 0
    assert list(cd.create_tf_dataset_for_client('carol')) == []


@pytest.mark.parametrize(
    'change, message',
    [
        (lambda c: c['bob'].pop('label'), r"Client 'bob' has fields \['pixels'\] but client 'alice'"),
        (lambda c: c['bob'].update(pixels=np.zeros((1, 28, 27), np.float32)), r"Client 'bob', field 'pixels'.*shape \(28, 27\)"),
        (lambda c: c['bob'].update(label=np.array([3], np.int64)), r"Client 'bob', field 'label'.*dtype int64"),
        (lambda c: c['bob'].update(label=np.array([3, 4], np.int32)), r"Client 'bob': all fields must hold the same number"),
        (lambda c: c['bob'].update(label=np.int32(3)), r"Client 'bob', field 'label': expected an array"),
        (lambda c: c.update({7: c['bob']}), r'Client ids must be strings, got 7'),
    ],
)
def test_from_arrays_rejects_inconsistent_clients_naming_client_and_field(change, message):
    clients = two_clients()
    change(clients)
    with pytest.raises(ValueError, match=message):
        ClientData.from_arrays(clients)


def test_from_arrays_needs_at_least_one_client():
    with pytest.raises(ValueError, match='got no clients'):
        ClientData.from_arrays({})


def test_unknown_client_is_a_key_and_value_error_suggesting_close_ids():
    cd = ClientData.from_arrays(two_clients())
    with pytest.raises(UnknownClientError) as info:
        cd.create_tf_dataset_for_client('alise')
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert str(info.value) == (
        "Unknown client id 'alise': this ClientData has 2 clients. "
        "Did you mean 'alice'? Pick ids from `client_data.client_ids`."
    )
    for method in (cd.client_arrays, cd.num_examples):
        with pytest.raises(ValueError, match="'carl'"):
            method('carl')


def test_preprocess_changes_datasets_and_spec_but_not_raw_arrays():
    cd = ClientData.from_arrays(two_clients())
    flat = cd.preprocess(lambda ds: ds.map(lambda e: tf.reshape(e['pixels'], [-1])))
    assert flat.element_spec == tf.TensorSpec([784], tf.float32)
    assert next(iter(flat.create_tf_dataset_for_client('bob'))).shape == (784,)
    assert flat.client_arrays('bob')['pixels'].shape == (1, 28, 28)
    assert cd.element_spec == EMNIST_SPEC  # The original is unchanged.
    assert 'preprocessed' in repr(flat)


def test_preprocess_composes_in_call_order():
    cd = ClientData.from_arrays({'a': {'y': np.arange(4)}})
    twice = cd.preprocess(lambda ds: ds.map(lambda e: e['y'])).preprocess(lambda ds: ds.batch(3))
    assert [b.numpy().tolist() for b in twice.create_tf_dataset_for_client('a')] == [[0, 1, 2], [3]]


def test_preprocess_rejects_non_functions():
    with pytest.raises(TypeError, match='expects a function'):
        ClientData.from_arrays(two_clients()).preprocess(20)


def test_from_partition_names_clients_and_copies_their_examples():
    labels = np.array([5, 6, 7, 8], np.int32)
    cd = ClientData.from_partition({'label': labels}, [[3, 0], [1], [2]])
    assert cd.client_ids == ['client_000', 'client_001', 'client_002']
    assert cd.client_arrays('client_000')['label'].tolist() == [8, 5]
    named = ClientData.from_partition({'label': labels}, {'x': np.array([1, 2])})
    assert named.client_ids == ['x']


def test_from_partition_rejects_bad_indices_and_ragged_fields():
    with pytest.raises(ValueError, match=r"Client 'client_001' has example indices outside \[0, 2\)"):
        ClientData.from_partition({'y': np.zeros(2)}, [[0], [2]])
    with pytest.raises(ValueError, match='same length'):
        ClientData.from_partition({'y': np.zeros(2), 'x': np.zeros(3)}, [[0]])


def test_from_h5_reads_tff_layout_with_sorted_ids(tmp_path):
    clients = make_emnist_like_clients(3, [2, 0, 5], seed=1)
    shuffled = {cid: clients[cid] for cid in reversed(list(clients))}
    write_emnist_h5(tmp_path / 'train.h5', shuffled)
    cd = ClientData.from_h5(tmp_path / 'train.h5')
    assert cd.client_ids == sorted(clients)
    assert cd.element_spec == EMNIST_SPEC
    assert [cd.num_examples(c) for c in cd.client_ids] == [2, 0, 5]
    arrays = cd.client_arrays('f0002_00')
    np.testing.assert_array_equal(arrays['pixels'], clients['f0002_00']['pixels'])
    first = next(iter(cd.create_tf_dataset_for_client('f0002_00')))
    assert int(first['label']) == clients['f0002_00']['label'][0]


def test_from_h5_opens_many_clients_and_reads_one_as_a_view_of_the_file(tmp_path):
    """Opening locates every client; a read copies nothing (the benchmark reports the times)."""
    path = tmp_path / 'many.h5'
    with h5py.File(path, 'w') as h5:
        for i in range(3383):
            group = h5.create_group(f'examples/f{i:04d}_00')
            group['label'] = np.full(3, i % 10, np.int32)
            group['pixels'] = np.ones((3, 28, 28), np.float32)
    cd = ClientData.from_h5(path)
    arrays = cd.client_arrays('f3382_00')
    assert len(cd) == 3383 and cd.num_examples('f0001_00') == 3 and arrays['label'].tolist() == [2, 2, 2]
    assert isinstance(arrays['pixels'].base, np.memmap) or isinstance(arrays['pixels'].base.base, np.memmap)
    assert not arrays['pixels'].flags.writeable


def test_from_h5_reads_compressed_and_contiguous_fields_alike(tmp_path):
    clients = make_emnist_like_clients(3, [4, 0, 6], seed=2)
    write_emnist_h5(tmp_path / 'plain.h5', clients)
    with h5py.File(tmp_path / 'packed.h5', 'w') as h5:
        for cid, fields in clients.items():
            for name, array in fields.items():
                h5.create_dataset(f'examples/{cid}/{name}', data=array, compression='gzip', chunks=True)
    plain, packed = ClientData.from_h5(tmp_path / 'plain.h5'), ClientData.from_h5(tmp_path / 'packed.h5')
    for cid, fields in clients.items():
        for got in (plain.client_arrays(cid), packed.client_arrays(cid)):
            for name, array in fields.items():
                np.testing.assert_array_equal(got[name], array)
                assert got[name].dtype == array.dtype and not got[name].flags.writeable
    assert [packed.num_examples(c) for c in packed.client_ids] == [4, 0, 6]


def test_from_h5_explains_missing_or_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='No HDF5 file'):
        ClientData.from_h5(tmp_path / 'missing.h5')
    with h5py.File(tmp_path / 'other.h5', 'w') as h5:
        h5['data'] = np.zeros(3)
    with pytest.raises(ValueError, match="expected clients under the group 'examples'"):
        ClientData.from_h5(tmp_path / 'other.h5')
