"""The fast engine's example order has tf.data's semantics, for every recipe it accepts.

A client dataset ``ClientDataset({'i': range(n)})`` is transformed by
``repeat``, ``shuffle`` and ``batch`` in each of the six orders, with random
counts, buffer sizes, batch sizes, ``drop_remainder``, shuffle seeds (or none)
and ``reshuffle_each_iteration``. The batches of example indices that the fast
engine lays out (``fast._client_stream``) and the batches that ``tf.data``
itself produces for the same recipe are checked against the same semantic
properties:

* the sequence of batch sizes is the same (exactly: it depends on counts only;
  as a multiset when the batches themselves are shuffled);
* the examples are the same multiset (with ``drop_remainder``, a sub-multiset);
* without a shuffle, the batches are identical;
* a shuffle's buffer limits how far an element moves forward: after ``k``
  outputs, only the first ``k + buffer - 1`` inputs can have been emitted
  (checked as multisets of example indices, or of batches for a shuffle after
  ``batch``), against the input the shuffle sees (the recipe's steps before it,
  without shuffling);
* a shuffle before a ``repeat`` works within an epoch: every epoch is a
  complete shuffled pass on its own; with ``reshuffle_each_iteration=False``
  every epoch has the same order, with ``True`` (the default) the epochs are
  not all the same (checked where at least 8 elements are shuffled with a
  buffer holding them all, so that equal orders are not a coincidence);
* a ``batch`` before a ``repeat`` ends every epoch with its own last batch; one
  after it lets batches span epochs (both follow from the batch sizes and the
  epoch checks).

What is not compared: the exact order of a shuffle. ``tf.data`` draws it from
TensorFlow's random generators and the fast engine from NumPy's, seeded by
``(process seed, round)`` and the shuffle's seed, so the same seed gives the
same order within fedteach but not the order ``tf.data`` would give.
"""
import collections

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedteach.data.pipeline import ClientDataset, shuffle_with_buffer
from fedteach.rounds import fast

ORDERS = ['rsb', 'rbs', 'srb', 'sbr', 'brs', 'bsr']  # r: repeat, s: shuffle, b: batch

recipes = st.fixed_dictionaries({
    'order': st.sampled_from(ORDERS),
    'n': st.integers(1, 12),
    'epochs': st.integers(1, 3),
    'buffer': st.integers(1, 14),
    'seed': st.one_of(st.none(), st.integers(0, 1000)),
    'reshuffle': st.booleans(),
    'batch': st.integers(1, 4),
    'drop': st.booleans(),
    'rng': st.integers(0, 1000),
})


def build(recipe, shuffle=True):
    ds = ClientDataset({'i': np.arange(recipe['n'])})
    for step in recipe['order']:
        if step == 'r':
            ds = ds.repeat(recipe['epochs'])
        elif step == 's' and shuffle:
            ds = ds.shuffle(recipe['buffer'], seed=recipe['seed'], reshuffle_each_iteration=recipe['reshuffle'])
        elif step == 'b':
            ds = ds.batch(recipe['batch'], drop_remainder=recipe['drop'])
    return ds


def fast_batches(recipe, shuffle=True):
    order, lengths = fast._client_stream(build(recipe, shuffle), np.random.default_rng(recipe['rng']))
    return [tuple(int(i) for i in b) for b in np.split(order, np.cumsum(lengths)[:-1])] if len(lengths) else []


def tf_batches(recipe, shuffle=True):
    tf.random.set_seed(recipe['rng'])  # unseeded shuffles: reproducible test cases
    return [tuple(int(i) for i in b['i'].numpy()) for b in build(recipe, shuffle).to_tf_dataset()]


def flat(batches):
    return [i for b in batches for i in b]


def within_buffer(outputs, inputs, buffer):
    """After k outputs, only the first k + buffer - 1 inputs can have been emitted (multisets)."""
    for k in range(1, len(outputs) + 1):
        if collections.Counter(outputs[:k]) - collections.Counter(inputs[:k + buffer - 1]):
            return False
    return True


def check_semantics(recipe, batches, unshuffled):
    """The properties of the module docstring for ``batches``; ``unshuffled``: the recipe's output without shuffle."""
    order, buffer, epochs = recipe['order'], recipe['buffer'], recipe['epochs']
    shuffle_in_epoch = order.index('s') < order.index('r')
    units_are_batches = order.index('b') < order.index('s')
    sizes, expected = [len(b) for b in batches], [len(b) for b in unshuffled]
    assert (sorted(sizes) == sorted(expected)) if units_are_batches else (sizes == expected)
    every = collections.Counter({i: epochs for i in range(recipe['n'])})
    if recipe['drop']:  # which examples the short last batch drops depends on the order
        assert not collections.Counter(flat(batches)) - every
    else:
        assert collections.Counter(flat(batches)) == every
    units = batches if units_are_batches else flat(batches)
    if not shuffle_in_epoch:  # one shuffle over the whole repeated stream
        inputs = unshuffled if units_are_batches else list(range(recipe['n'])) * epochs  # before any drop
        assert within_buffer(units, inputs, buffer)
        return
    # A shuffle within each epoch: the output splits into epochs; each is a shuffled pass of its own.
    n, size = recipe['n'], recipe['batch']
    if order == 'bsr':  # units are batches: each epoch is one epoch's batches, reordered
        epoch_input = [tuple(range(i, min(i + size, n))) for i in range(0, n, size)
                       if not recipe['drop'] or i + size <= n]
        length = len(epoch_input)
    else:  # examples: 'srb' lets batches span epochs (n examples each), 'sbr' batches each epoch on its own
        epoch_input = list(range(n))
        length = n if order == 'srb' or not recipe['drop'] else n // size * size
    epochs_out = [units[e * length:(e + 1) * length] for e in range(epochs)]
    for one in epochs_out:
        assert within_buffer(one, epoch_input, buffer)
    complete = [one for one in epochs_out if len(one) == length and length]
    if not recipe['reshuffle']:
        assert all(one == complete[0] for one in complete)
    elif len(complete) >= 2 and length >= 8 and buffer >= len(epoch_input):
        assert any(one != complete[0] for one in complete), 'the same order in every epoch'


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipes)
def test_fast_plan_has_tf_data_semantics(recipe):
    unshuffled = tf_batches(recipe, shuffle=False)
    assert fast_batches(recipe, shuffle=False) == unshuffled  # no shuffle: the same batches exactly
    for batches in (fast_batches(recipe), tf_batches(recipe)):
        check_semantics(recipe, batches, unshuffled)


def test_shuffle_then_repeat_draws_a_new_order_every_epoch():
    """The issue's example: 6 examples, shuffle(6).repeat(3).batch(6)."""
    recipe = dict(order='srb', n=6, epochs=3, buffer=6, seed=None, reshuffle=True, batch=6, drop=False, rng=0)
    epochs = fast_batches(recipe)
    assert len(epochs) == 3 and all(sorted(e) == list(range(6)) for e in epochs)
    assert len(set(epochs)) > 1
    again = fast_batches(dict(recipe, reshuffle=False))
    assert len(set(again)) == 1 and sorted(again[0]) == list(range(6))


@pytest.mark.parametrize('seed', [None, 7])
def test_same_rng_same_plan(seed):
    recipe = dict(order='srb', n=9, epochs=2, buffer=4, seed=seed, reshuffle=True, batch=3, drop=False, rng=5)
    assert fast_batches(recipe) == fast_batches(recipe)
    assert fast_batches(recipe) != fast_batches(dict(recipe, rng=6))


def buffered_shuffle_step_by_step(stream, buffer_size, rng):
    """tf.data's buffered shuffle written out: while the input lasts, a uniformly picked slot is output and
    refilled with the next input; then what is left comes out in a uniformly random order."""
    buffer, out = list(stream[:buffer_size]), []
    picks = (rng.random(len(stream) - buffer_size) * buffer_size).astype(np.int64)
    for i, slot in enumerate(picks):
        out.append(buffer[slot])
        buffer[slot] = stream[buffer_size + i]
    return np.array(out + [buffer[j] for j in rng.permutation(buffer_size)], dtype=stream.dtype)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 80), st.integers(1, 90), st.integers(0, 2**32 - 1))
def test_the_buffered_shuffle_equals_its_step_by_step_definition(n, buffer_size, seed):
    stream = np.random.default_rng(seed).permutation(1000)[:n]
    if buffer_size >= n:
        expected = stream[np.random.default_rng(seed).permutation(n)]
    else:
        expected = buffered_shuffle_step_by_step(stream, buffer_size, np.random.default_rng(seed))
    assert shuffle_with_buffer(stream, buffer_size, np.random.default_rng(seed)).tolist() == expected.tolist()
