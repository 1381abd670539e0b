"""An offline federated digits dataset that ships with fedteach.

Real handwritten digits (the 1,797 8x8 UCI digits that scikit-learn carries,
see DIGITS_LICENSE.txt) are scaled into EMNIST's 28x28 frame and polarity and
dealt to simulated writers. Like TFF's "Infinite EMNIST" pseudo-writers,
each writer has its own fixed handwriting style, a random affine transform
(rotation, shear, scale, shift) plus a stroke thickness, applied to all of
its examples, and its own label skew (Dirichlet). Source images are split
into disjoint train and test pools first, so no test example is a transformed
copy of a train image.

Scaling 8x8 images up 2.5 times turns every source pixel into a 2.5-pixel
square, so a digit whose 8x8 image already has a solid patch (most often a
"1" drawn as a two-pixel-wide bar) becomes a black blob, and a writer's
enlarging, thickening style made it worse; a shifted, rotated digit could
also leave the frame. So: source images with a solid patch are left out,
an example whose ink would reach the frame's edge is warped into a larger
canvas and cut out around its ink, and an example that still fails the quality check (`_readable`: too much or too
little ink, a solid patch, ink at the frame's edge) is drawn again, from
another source image of its label with new jitter.
"""

from __future__ import annotations

import gzip
import pathlib

import numpy as np

from fedteach.data.client_data import ClientData

_DIGITS_CSV = pathlib.Path(__file__).with_name('digits.csv.gz')
_SIZE, _BOX = 28, 20  # EMNIST frame; MNIST-style 20x20 box for the digit.
_NUM_CLASSES = 10
_TEST_SOURCE_FRACTION = 0.2
_CHUNK = 512
_CANVAS = 36  # The warp's output; the 28x28 frame is cut out of it around the ink.
_MARGIN = 1  # Pixels kept free of ink along the frame's edge.
_INK = 0.5  # A pixel with at least this much ink counts as ink in the quality check.
_MAX_EROSIONS = 2  # A readable stroke survives at most two 3x3 erosions (no solid 7x7 patch).
_INK_FRACTION = (0.04, 0.30)  # Share of the frame's pixels that are ink, as in EMNIST's digits.
_REDRAWS = 20


def load_offline_digits(
    num_clients: int = 200,
    seed: int = 0,
    *,
    alpha: float = 1.0,
    examples_per_client: int = 90,
    test_examples_per_client: int = 10,
) -> tuple[ClientData, ClientData]:
    """Federated handwritten digits with simulated writers, no download needed.

    Same element structure as federated EMNIST: `{'label': int32[],
    'pixels': float32[28, 28]}` with 1.0 the background and 0.0 ink; the same
    writers (ids 'writer_000', ...) in train and test. Each writer has a
    Dirichlet(alpha) label distribution, a fixed style, and a number of
    examples drawn around `examples_per_client` (lognormal, like real writers).
    Deterministic for a seed.

    Args:
        num_clients: number of simulated writers.
        seed: seed of the split, the writers and their examples.
        alpha: Dirichlet concentration of each writer's labels; small values
            (0.1) give writers few labels, large values (100) near-IID writers.
        examples_per_client: mean number of train examples per writer.
        test_examples_per_client: mean number of test examples per writer
            (at least one each).

    Returns:
        `(train, test)` `ClientData`.

    Example:
        >>> train, test = load_offline_digits(num_clients=5, seed=1)
        >>> train.client_ids[:2], train.element_spec['pixels'].shape
        (['writer_000', 'writer_001'], TensorShape([28, 28]))
        >>> test.client_ids == train.client_ids
        True
    """
    if num_clients < 1 or alpha <= 0 or examples_per_client < 1 or test_examples_per_client < 1:
        raise ValueError(
            'load_offline_digits needs num_clients >= 1, alpha > 0, examples_per_client >= 1 '
            f'and test_examples_per_client >= 1; got {num_clients}, {alpha}, '
            f'{examples_per_client} and {test_examples_per_client}.'
        )
    rng = np.random.default_rng(seed)
    ink, labels = _framed_digits()
    order = rng.permutation(len(labels))
    order = order[_readable(ink[order], fraction=(0.0, 1.0))]  # No source with a solid patch.
    num_test = round(_TEST_SOURCE_FRACTION * len(order))
    pools = {'test': order[:num_test], 'train': order[num_test:]}

    label_probs = rng.dirichlet(np.full(_NUM_CLASSES, alpha), size=num_clients)
    styles = _writer_styles(rng, num_clients)
    train_sizes = np.maximum(
        5, np.round(examples_per_client * rng.lognormal(-0.125, 0.5, num_clients))
    ).astype(np.int64)
    test_sizes = np.maximum(
        1, rng.poisson(train_sizes * test_examples_per_client / examples_per_client)
    )
    width = max(3, len(str(num_clients - 1)))
    client_ids = [f'writer_{i:0{width}d}' for i in range(num_clients)]

    splits = []
    for split, sizes in (('train', train_sizes), ('test', test_sizes)):
        writer = np.repeat(np.arange(num_clients), sizes)
        example_labels = _sample_labels(rng, label_probs[writer])
        sources = _sample_sources(rng, example_labels, labels, pools[split])
        drawn = _render(rng, ink, sources, styles, writer)
        redo = np.flatnonzero(~_readable(drawn))
        for _ in range(_REDRAWS):
            if not redo.size:
                break
            sources[redo] = _sample_sources(rng, example_labels[redo], labels, pools[split])
            drawn[redo] = _render(rng, ink, sources[redo], styles, writer[redo])
            redo = redo[~_readable(drawn[redo])]
        pixels = 1.0 - drawn
        bounds = np.cumsum(sizes)[:-1]
        splits.append(
            ClientData.from_arrays(
                {
                    client_id: {'label': label, 'pixels': pixel}
                    for client_id, label, pixel in zip(
                        client_ids,
                        np.split(example_labels, bounds),
                        np.split(pixels, bounds),
                    )
                }
            )
        )
    return splits[0], splits[1]


def _framed_digits() -> tuple[np.ndarray, np.ndarray]:
    """The UCI digits as ink in [0, 1], scaled (cubic) into a 20x20 box centred in 28x28."""
    with gzip.open(_DIGITS_CSV, 'rt') as handle:
        table = np.loadtxt(handle, delimiter=',', dtype=np.float32)
    images = table[:, :64].reshape(-1, 8, 8) / 16.0
    upscale = _cubic_matrix(_BOX, 8)
    box = np.clip(upscale @ images @ upscale.T, 0.0, 1.0)
    frame = np.zeros((len(images), _SIZE, _SIZE), np.float32)
    start = (_SIZE - _BOX) // 2
    frame[:, start : start + _BOX, start : start + _BOX] = box
    return frame, table[:, 64].astype(np.int32)


def _cubic_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Resampling matrix [n_out, n_in] of Keys' cubic convolution (a = -0.5), edges clamped."""
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    base = np.floor(centres).astype(np.int64)
    matrix = np.zeros((n_out, n_in), np.float32)
    for k in range(-1, 3):
        d = np.abs(centres - (base + k))
        weight = np.where(
            d <= 1,
            1.5 * d**3 - 2.5 * d**2 + 1,
            np.where(d < 2, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2, 0.0),
        )
        np.add.at(matrix, (np.arange(n_out), np.clip(base + k, 0, n_in - 1)), weight)
    return matrix


def _writer_styles(rng: np.random.Generator, num_clients: int) -> dict[str, np.ndarray]:
    """One fixed handwriting style per writer."""
    return {
        'rotation': np.clip(rng.normal(0.0, np.deg2rad(12), num_clients), -0.5, 0.5),
        'shear': np.clip(rng.normal(0.0, 0.25, num_clients), -0.45, 0.45),
        'scale': np.exp(np.clip(rng.normal(-0.05, 0.1, (num_clients, 2)), -0.3, 0.1)),
        'shift': np.clip(rng.normal(0.0, 1.0, (num_clients, 2)), -2.5, 2.5),
        # An exponent on the ink: above 1 thins the strokes' soft edges, below 1 thickens them.
        'thickness': np.exp(np.clip(rng.normal(0.2, 0.35, num_clients), -0.3, 0.9)),
    }


def _sample_labels(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One label per row of `probs` (examples x classes)."""
    cumulative = np.cumsum(probs, axis=1)
    draws = rng.random(len(probs)) * cumulative[:, -1]
    return np.minimum((draws[:, None] >= cumulative).sum(axis=1), _NUM_CLASSES - 1).astype(np.int32)


def _sample_sources(
    rng: np.random.Generator, wanted: np.ndarray, labels: np.ndarray, pool: np.ndarray
) -> np.ndarray:
    """For each wanted label, a random source image of that label from `pool`."""
    sources = np.empty(len(wanted), np.int64)
    for label in range(_NUM_CLASSES):
        candidates = pool[labels[pool] == label]
        slots = np.flatnonzero(wanted == label)
        sources[slots] = candidates[rng.integers(len(candidates), size=len(slots))]
    return sources


def _example_transforms(
    rng: np.random.Generator, styles: dict[str, np.ndarray], writer: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse affine maps (output -> source pixel), the writer's style plus jitter."""
    n = len(writer)
    angle = styles['rotation'][writer] + rng.normal(0.0, np.deg2rad(3), n)
    shear = styles['shear'][writer] + rng.normal(0.0, 0.03, n)
    scale = styles['scale'][writer] * np.exp(rng.normal(0.0, 0.03, (n, 1)))
    shift = styles['shift'][writer] + rng.normal(0.0, 0.5, (n, 2))
    cos, sin = np.cos(angle), np.sin(angle)
    # Forward map on (x, y) = (column, row): rotation @ shear @ diag(scale).
    forward = np.empty((n, 2, 2))
    forward[:, 0, 0] = cos * scale[:, 0]
    forward[:, 0, 1] = (cos * shear - sin) * scale[:, 1]
    forward[:, 1, 0] = sin * scale[:, 0]
    forward[:, 1, 1] = (sin * shear + cos) * scale[:, 1]
    return np.linalg.inv(forward).astype(np.float32), shift.astype(np.float32)


def _render(
    rng: np.random.Generator,
    ink: np.ndarray,
    sources: np.ndarray,
    styles: dict[str, np.ndarray],
    writer: np.ndarray,
) -> np.ndarray:
    """Ink [n, 28, 28] of source images in their writers' styles, kept inside the frame.

    An example whose ink reaches the frame's edge is warped again into a
    larger canvas and cut out around its ink instead.
    """
    thickness = styles['thickness'][writer, None, None].astype(np.float32)
    images = ink[sources] ** thickness
    inverse, shift = _example_transforms(rng, styles, writer)
    drawn = _warp(images, inverse, shift, _SIZE)
    edge = drawn >= 0.1
    edge[:, _MARGIN:-_MARGIN, _MARGIN:-_MARGIN] = False
    out = np.flatnonzero(edge.any(axis=(1, 2)))
    drawn[out] = _cut_out(_warp(images[out], inverse[out], shift[out], _CANVAS))
    return drawn


def _cut_out(canvas: np.ndarray) -> np.ndarray:
    """The 28x28 window of each [n, 36, 36] canvas: centred, unless moving it keeps all ink inside."""
    centred = (_CANVAS - _SIZE) // 2
    offsets = []
    for axis in (2, 1):  # Rows have ink where any column has, and the other way round.
        inked = canvas.max(axis=axis) >= 0.1
        first = np.argmax(inked, axis=1)
        last = _CANVAS - 1 - np.argmax(inked[:, ::-1], axis=1)
        low, high = last + _MARGIN - (_SIZE - 1), first - _MARGIN  # Offsets that keep the ink inside.
        fits = low <= high
        offsets.append(np.where(fits, np.clip(centred, low, high), (low + high) // 2).clip(0, _CANVAS - _SIZE))
    steps = np.arange(_SIZE)
    rows = (offsets[0][:, None] + steps)[:, :, None]
    cols = (offsets[1][:, None] + steps)[:, None, :]
    return canvas[np.arange(len(canvas))[:, None, None], rows, cols]


def _readable(ink: np.ndarray, fraction: tuple[float, float] = _INK_FRACTION) -> np.ndarray:
    """Which [n, 28, 28] ink images pass the quality check (a bool per image).

    Readable: the share of ink pixels lies within `fraction`, no solid patch
    (the ink survives at most `_MAX_EROSIONS` 3x3 erosions), and no ink
    within `_MARGIN` pixels of the frame's edge.
    """
    inked = ink >= _INK
    share = inked.mean(axis=(1, 2))
    edge = inked.copy()
    edge[:, _MARGIN:-_MARGIN, _MARGIN:-_MARGIN] = False
    solid = inked
    for _ in range(_MAX_EROSIONS + 1):  # A 3x3 erosion is a 3x1 erosion of a 1x3 erosion.
        solid = np.pad(solid, ((0, 0), (0, 0), (1, 1)))
        solid = solid[:, :, :-2] & solid[:, :, 1:-1] & solid[:, :, 2:]
        solid = np.pad(solid, ((0, 0), (1, 1), (0, 0)))
        solid = solid[:, :-2] & solid[:, 1:-1] & solid[:, 2:]
    return (fraction[0] <= share) & (share <= fraction[1]) & ~solid.any(axis=(1, 2)) & ~edge.any(axis=(1, 2))


def _warp(images: np.ndarray, inverse: np.ndarray, shift: np.ndarray, size: int) -> np.ndarray:
    """Bilinear affine warp of [n, 28, 28] images about their centre into [n, size, size] (zero outside)."""
    centre = (_SIZE - 1) / 2
    side = _SIZE + 2  # One pixel of zero padding on each side.
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32).reshape(2, 1, -1) - (size - 1) / 2
    out = np.empty((len(images), size, size), images.dtype)
    for start in range(0, len(images), _CHUNK):
        part = slice(start, start + _CHUNK)
        m, x, y = inverse[part], cols - shift[part, 0, None], rows - shift[part, 1, None]
        src_x = np.clip(m[:, 0, 0, None] * x + m[:, 0, 1, None] * y + (centre + 1), 0, side - 1)
        src_y = np.clip(m[:, 1, 0, None] * x + m[:, 1, 1, None] * y + (centre + 1), 0, side - 1)
        x0 = np.minimum(src_x.astype(np.int32), side - 2)
        y0 = np.minimum(src_y.astype(np.int32), side - 2)
        wx, wy = src_x - x0, src_y - y0
        padded = np.pad(images[part], ((0, 0), (1, 1), (1, 1))).reshape(-1)
        index = (np.arange(len(m), dtype=np.int32) * side * side)[:, None] + y0 * side + x0
        top, bottom = padded.take(index), padded.take(index + side)
        top += wx * (padded.take(index + 1) - top)
        bottom += wx * (padded.take(index + side + 1) - bottom)
        top += wy * (bottom - top)
        out[part] = top.reshape(-1, size, size)
    return out
