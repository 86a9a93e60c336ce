"""Datasets: MNIST-format IDX folders, TFDS as a fallback, and the Gaussian mixture of Eq. (2)."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import zlib
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DATA_DIR_ENV = "MDL_DATA_DIR"

#: Dataset names a config may give: MNIST-format sets (read from an IDX folder when one is
#: given, else through TFDS), ``idx`` for any other IDX folder, and Eq. (2)'s Gaussian mixture.
DATASETS = ("mnist", "fashion_mnist", "kmnist", "idx", "gaussian_mixture")

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/ file format).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")


class DataError(ValueError):
    """A data folder or file that cannot be read as an MNIST-format dataset."""


class Dataset(NamedTuple):
    """A classification dataset held in memory.

    Attributes:
      name: where it came from.
      train_images: ``(n_train, D)`` float32; pixels scaled to ``[0, 1]``.
      train_labels: ``(n_train,)`` int32 class indices.
      test_images: ``(n_test, D)`` float32.
      test_labels: ``(n_test,)`` int32.
      num_classes: number of classes (the output width a network needs).
      val_images: ``(n_val, D)`` held-out validation images, or ``None`` (see :func:`hold_out`).
      val_labels: ``(n_val,)``, or ``None``.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    val_images: np.ndarray | None = None
    val_labels: np.ndarray | None = None

    @property
    def input_dim(self) -> int:
        return self.train_images.shape[1]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file, gzip-compressed or raw (detected from its first bytes).

    Raises:
      DataError: when the file is missing, not gzip-readable, has a bad magic number or an
        unknown type code, or holds a different number of bytes than its header announces.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(
                f"{path} is a corrupt or truncated gzip file ({err}); download it again"
            ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path} is not an IDX file: its magic number {raw[:4].hex() or '(empty)'} should be "
            "00 00 <type> <ndim>, e.g. 00000803 for images, 00000801 for labels"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path} holds {len(raw)} bytes but its header announces shape {shape} "
            f"({expected} bytes): the file is truncated or corrupt; download it again"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    found = {}
    for entry in sorted(folder.iterdir()):
        match = _IDX_NAME.match(entry.name)
        if match:
            found.setdefault((match.group(1), match.group(2)), entry)
    return found


def load_idx_folder(folder: str | os.PathLike, *, name: str | None = None) -> Dataset:
    """Loads an MNIST-format dataset (MNIST, Fashion-MNIST, KMNIST, ...) from IDX files.

    The folder must hold ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally ``.gz``
    (``images.idx3`` spellings are accepted too). Images of any size are flattened.

    Raises:
      DataError: a missing folder or file, a corrupt file, or inconsistent counts and shapes.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"data folder {folder} does not exist: pass a folder of MNIST-format IDX files "
            f"with --data-dir or {DATA_DIR_ENV}, or leave both unset to use TFDS"
        )
    files = _find_idx_files(folder)
    missing = [
        f"{split}-{kind}-idx{'3' if kind == 'images' else '1'}-ubyte[.gz]"
        for split in ("train", "t10k") for kind in ("images", "labels")
        if (split, kind) not in files
    ]
    if missing:
        present = ", ".join(p.name for p in sorted(folder.iterdir())) or "nothing"
        raise DataError(f"{folder} lacks {', '.join(missing)} (it holds: {present})")
    arrays = {key: read_idx(path) for key, path in files.items()}
    splits = {}
    for split in ("train", "t10k"):
        images, labels = arrays[(split, "images")], arrays[(split, "labels")]
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(
                f"{files[(split, 'images')].name} must be 3-d (n, rows, cols) and "
                f"{files[(split, 'labels')].name} 1-d; got shapes {images.shape} and {labels.shape}"
            )
        if len(images) != len(labels):
            raise DataError(
                f"{split} split has {len(images)} images but {len(labels)} labels "
                f"({files[(split, 'images')].name} vs {files[(split, 'labels')].name})"
            )
        splits[split] = (images, labels)
    if splits["train"][0].shape[1:] != splits["t10k"][0].shape[1:]:
        raise DataError(
            f"train images are {splits['train'][0].shape[1:]} but test images are "
            f"{splits['t10k'][0].shape[1:]}"
        )
    return _as_dataset(name or folder.name, *splits["train"], *splits["t10k"])


def _as_dataset(name, train_images, train_labels, test_images, test_labels) -> Dataset:
    def flat(images):
        return (np.asarray(images, np.float32) / 255.0).reshape(len(images), -1)

    train_labels = np.asarray(train_labels).astype(np.int32).reshape(-1)
    test_labels = np.asarray(test_labels).astype(np.int32).reshape(-1)
    if train_labels.min() < 0:
        raise DataError(f"{name}: labels must be class indices >= 0")
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    return Dataset(name, flat(train_images), train_labels, flat(test_images), test_labels, num_classes)


def load_tfds(name: str = "mnist", *, tfds_data_dir: str | None = None) -> Dataset:
    """Loads an image-classification dataset with ``tfds.data_source`` (no TensorFlow needed).

    TFDS downloads and prepares the dataset on first use, which needs network access.
    """
    import tensorflow_datasets as tfds

    splits = {}
    for split in ("train", "test"):
        try:
            source = tfds.data_source(name, split=split, data_dir=tfds_data_dir)
            records = [source[i] for i in range(len(source))]
        except ImportError as err:  # a package TFDS imports lazily: not the network's fault
            raise DataError(
                f"could not load {name!r} through TFDS: it needs the package {err.name or err}, which is not "
                f"installed ({err}); install it (pip install {err.name or '...'}), or give a folder of MNIST-format "
                f"IDX files with --data-dir or {DATA_DIR_ENV}"
            ) from err
        except Exception as err:  # TFDS raises many types for a failed download or preparation
            raise DataError(
                f"could not load {name!r} ({split}) through TFDS: {err}. Without network access, "
                f"give a folder of MNIST-format IDX files with --data-dir or {DATA_DIR_ENV}"
            ) from err
        splits[split] = (
            np.stack([r["image"] for r in records]),
            np.asarray([r["label"] for r in records]),
        )
    return _as_dataset(f"tfds:{name}", *splits["train"], *splits["test"])


def load_dataset(name: str = "mnist", data_dir: str | os.PathLike | None = None) -> Dataset:
    """Loads a dataset by name.

    ``gaussian_mixture`` is the synthetic task of Eq. (2) (:func:`gaussian_mixture_dataset`).
    Otherwise the IDX folder ``data_dir`` is read, or ``$MDL_DATA_DIR`` when ``data_dir`` is
    ``None``; with neither set, ``name`` is loaded through TFDS.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "gaussian_mixture":
        return gaussian_mixture_dataset(jax.random.PRNGKey(0))
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if data_dir is not None:
        return load_idx_folder(data_dir, name=name)
    if name == "idx":
        raise DataError(f"dataset 'idx' needs a folder of IDX files: pass data_dir or set ${DATA_DIR_ENV}")
    return load_tfds(name)


def hold_out(dataset: Dataset, n_val: int) -> Dataset:
    """``dataset`` with its last ``n_val`` training examples moved to a validation set (the
    trainer then reports ``val_loss`` and ``val_accuracy`` every epoch). ``n_val = 0``: as is.

    Raises:
      DataError: when ``n_val`` leaves no training example or is negative.
    """
    n_train = len(dataset.train_labels)
    if not 0 <= n_val < n_train:
        raise DataError(f"validation = {n_val} must be >= 0 and leave training examples: the data have {n_train}; "
                        f"choose e.g. validation = {n_train // 6}")
    if n_val == 0:
        return dataset
    return dataset._replace(train_images=dataset.train_images[:-n_val], train_labels=dataset.train_labels[:-n_val],
                            val_images=dataset.train_images[-n_val:], val_labels=dataset.train_labels[-n_val:])


def fingerprint(dataset: Dataset) -> dict:
    """Shapes, class count and a SHA-256 of the arrays: identifies a dataset's content
    wherever its files lie (about 0.1 s for MNIST)."""
    digest = hashlib.sha256()
    for array in dataset[1:5]:
        digest.update(np.ascontiguousarray(array).tobytes())
    return {
        "train": list(dataset.train_images.shape), "test": list(dataset.test_images.shape),
        "num_classes": int(dataset.num_classes), "sha256": digest.hexdigest(),
    }


def gaussian_mixture(
    key: jax.Array, n: int, *, variance: float = 0.05
) -> tuple[jax.Array, jax.Array]:
    """Samples the four-component Gaussian mixture of the letter's Eq. (2).

    ``P(t = +-1) = 1/2``; given ``t``, one of two components with equal weight: means
    ``+-(0.5, 0.5)`` for ``t = +1`` and ``+-(-0.5, 0.5)`` for ``t = -1``, isotropic covariance
    ``variance * I``. No linear classifier separates the two labels (an XOR layout).

    Returns:
      ``x`` of shape ``(n, 2)`` and labels ``t`` in ``{-1, +1}`` of shape ``(n,)``.
    """
    k_t, k_side, k_noise = jax.random.split(key, 3)
    t = jnp.where(jax.random.bernoulli(k_t, 0.5, (n,)), 1.0, -1.0)
    side = jnp.where(jax.random.bernoulli(k_side, 0.5, (n,)), 1.0, -1.0)
    mean = side[:, None] * jnp.stack([0.5 * t, jnp.full_like(t, 0.5)], axis=1)
    x = mean + jnp.sqrt(variance) * jax.random.normal(k_noise, (n, 2))
    return x, t


def gaussian_mixture_dataset(key: jax.Array, n_train: int = 4000, n_test: int = 1000) -> Dataset:
    """Eq. (2) as a two-class dataset (class 1 for ``t = +1``, class 0 for ``t = -1``)."""
    k_train, k_test = jax.random.split(key)
    (x_tr, t_tr), (x_te, t_te) = gaussian_mixture(k_train, n_train), gaussian_mixture(k_test, n_test)
    return Dataset(
        "gaussian_mixture",
        np.asarray(x_tr, np.float32), np.asarray(t_tr > 0, np.int32),
        np.asarray(x_te, np.float32), np.asarray(t_te > 0, np.int32), 2,
    )
