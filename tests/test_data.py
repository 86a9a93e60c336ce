"""Data: IDX files of any MNIST-format dataset, their errors, TFDS offline, Eq. (2) mixture."""

import gzip
import struct

import jax
import numpy as np
import pytest

import mdl_jax
from mdl_jax import DataError


def write_idx(path, array, *, compress):
    array = np.asarray(array, np.uint8)
    raw = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def make_folder(folder, *, n_train=30, n_test=10, side=28, classes=10, compress=True, sep="-"):
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    suffix = ".gz" if compress else ""
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, side, side))
        labels = rng.integers(0, classes, n)
        write_idx(folder / f"{split}-images{sep}idx3-ubyte{suffix}", images, compress=compress)
        write_idx(folder / f"{split}-labels{sep}idx1-ubyte{suffix}", labels, compress=compress)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("sep", ["-", "."])
def test_idx_folder_roundtrip(tmp_path, compress, sep):
    arrays = make_folder(tmp_path / "fashion", compress=compress, sep=sep)
    data = mdl_jax.load_idx_folder(tmp_path / "fashion")
    images, labels = arrays["train"]
    np.testing.assert_allclose(data.train_images, images.reshape(30, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.train_labels, labels)
    assert data.test_images.shape == (10, 784) and data.train_images.dtype == np.float32
    assert data.name == "fashion" and data.num_classes == 10


def test_other_image_sizes_and_class_counts(tmp_path):
    make_folder(tmp_path / "small", side=8, classes=4)
    data = mdl_jax.load_idx_folder(tmp_path / "small")
    assert data.input_dim == 64 and data.num_classes <= 4


def test_load_dataset_reads_the_env_folder(tmp_path, monkeypatch):
    make_folder(tmp_path / "d")
    monkeypatch.setenv(mdl_jax.DATA_DIR_ENV, str(tmp_path / "d"))
    assert mdl_jax.load_dataset("mnist").train_images.shape == (30, 784)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist: pass a folder of MNIST-format IDX files"):
        mdl_jax.load_idx_folder(tmp_path / "nowhere")


def test_missing_file_is_named(tmp_path):
    make_folder(tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte\[.gz\]"):
        mdl_jax.load_idx_folder(tmp_path / "d")


def test_corrupt_gzip(tmp_path):
    make_folder(tmp_path / "d")
    path = tmp_path / "d" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        mdl_jax.load_idx_folder(tmp_path / "d")


def test_bad_magic(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(DataError, match="not an IDX file: its magic number 504b0304"):
        mdl_jax.read_idx(path)


def test_truncated_payload(tmp_path):
    make_folder(tmp_path / "d", compress=False)
    path = tmp_path / "d" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="header announces shape"):
        mdl_jax.load_idx_folder(tmp_path / "d")


def test_count_mismatch(tmp_path):
    make_folder(tmp_path / "d")
    write_idx(tmp_path / "d" / "train-labels-idx1-ubyte.gz", np.zeros(29), compress=True)
    with pytest.raises(DataError, match="train split has 30 images but 29 labels"):
        mdl_jax.load_idx_folder(tmp_path / "d")


def test_tfds_fallback_offline(monkeypatch):
    """No folder given: the dataset comes through ``tfds.data_source`` (mocked, no network)."""
    import tensorflow_datasets as tfds

    monkeypatch.delenv(mdl_jax.DATA_DIR_ENV, raising=False)
    with tfds.testing.mock_data(num_examples=12):
        data = mdl_jax.load_dataset("fashion_mnist", data_dir=None)
    assert data.name == "tfds:fashion_mnist"
    assert data.train_images.shape == (12, 784) and data.test_images.shape == (12, 784)
    assert 0.0 <= data.train_images.min() and data.train_images.max() <= 1.0


def test_tfds_failure_names_the_fix(monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds, "data_source", offline)
    with pytest.raises(DataError, match="give a folder of MNIST-format IDX files with --data-dir"):
        mdl_jax.load_tfds("mnist")


def test_gaussian_mixture_matches_eq2():
    x, t = mdl_jax.gaussian_mixture(jax.random.PRNGKey(0), 40_000)
    x, t = np.asarray(x), np.asarray(t)
    assert abs(t.mean()) < 0.02
    for label, mean in ((1.0, (0.5, 0.5)), (-1.0, (-0.5, 0.5))):
        points = x[t == label]
        near = points[(points @ np.asarray(mean)) > 0]  # the + component of this label
        np.testing.assert_allclose(near.mean(0), mean, atol=0.02)
        np.testing.assert_allclose(near.var(0), 0.05, rtol=0.06)
    # XOR layout: the two labels have the same mean, so no linear rule separates them
    np.testing.assert_allclose(x[t == 1].mean(0), x[t == -1].mean(0), atol=0.03)


@pytest.mark.mnist
def test_real_mnist_files(mnist):
    assert mnist.train_images.shape == (60_000, 784) and mnist.test_images.shape == (10_000, 784)
    assert mnist.num_classes == 10
    assert np.bincount(mnist.train_labels).min() > 5000
    assert 0.12 < mnist.train_images.mean() < 0.14  # the known MNIST pixel mean, 0.1307
