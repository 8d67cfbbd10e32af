import gzip
import os

import numpy as np
import pytest

from redundancy_jax import data


def test_reads_real_mnist_idx(shared_mnist_dir):
  x, y = data.read_idx_pair(
    os.path.join(shared_mnist_dir, "t10k-images-idx3-ubyte.gz"),
    os.path.join(shared_mnist_dir, "t10k-labels-idx1-ubyte.gz"),
  )
  assert x.shape == (10_000, 28, 28, 1) and x.dtype == np.uint8
  assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first test labels
  assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_bundled_split_is_deterministic_disjoint_and_complete():
  a, b = data.load_bundled_mnist(seed=0), data.load_bundled_mnist(seed=0)
  assert (len(a.train_y), len(a.val_y), len(a.test_y)) == (8000, 1000, 1000)
  np.testing.assert_array_equal(a.test_x, b.test_x)
  flat = lambda x: {row.tobytes() for row in x.reshape(len(x), -1)}
  assert not flat(a.train_x) & flat(a.test_x)
  assert sum(np.bincount(s, minlength=10) for s in (a.train_y, a.val_y, a.test_y)).sum() == 10_000


def test_offline_default_falls_back_to_bundled(monkeypatch, tmp_path):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  ds = data.load_dataset("mnist")
  assert ds.source.startswith("bundled MNIST test set")


def _write_idx(path, array, magic_type=0x08):
  header = bytes([0, 0, magic_type, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_idx_files_in_data_dir_with_validation_split(tmp_path):
  rng = np.random.default_rng(0)
  for split, n in (("train", 60), ("t10k", 20)):
    _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
  ds = data.load_dataset("mnist", data_dir=str(tmp_path), val_size=10)
  assert (len(ds.train_y), len(ds.val_y), len(ds.test_y)) == (50, 10, 20)
  assert ds.source == f"files in {tmp_path}"


def test_corrupt_idx_names_file_and_format(tmp_path):
  bad = tmp_path / "t10k-images-idx3-ubyte.gz"
  with gzip.open(bad, "wb") as f:
    f.write(b"\x12\x34\x56\x78" + b"\0" * 20)
  with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte.gz: bad IDX magic"):
    data.read_idx(str(bad))
  _write_idx(bad, np.zeros((5, 28, 28)))
  with gzip.open(bad, "rb") as f:
    raw = f.read()
  with gzip.open(bad, "wb") as f:
    f.write(raw[:-7])
  with pytest.raises(data.DataError, match="promises dims"):
    data.read_idx(str(bad))


def test_missing_files_name_the_file(tmp_path):
  (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
  with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz"):
    data.load_dataset("mnist", data_dir=str(tmp_path))


def test_cifar10_binary_records(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (7, 32, 32, 3)).astype(np.uint8)
  labels = rng.integers(0, 10, 7).astype(np.uint8)
  records = np.concatenate([labels[:, None], images.transpose(0, 3, 1, 2).reshape(7, -1)], axis=1)
  for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
    records.tofile(tmp_path / name)
  x, y = data.read_cifar10_bin(str(tmp_path / "test_batch.bin"))
  np.testing.assert_array_equal(x, images)
  np.testing.assert_array_equal(y, labels)
  ds = data.load_dataset("cifar10", data_dir=str(tmp_path), val_size=5)
  assert len(ds.train_y) == 30 and ds.image_shape == (32, 32, 3)
  (tmp_path / "test_batch.bin").write_bytes(b"\0" * 100)
  with pytest.raises(data.DataError, match="not a whole number of 3073-byte"):
    data.read_cifar10_bin(str(tmp_path / "test_batch.bin"))


def test_cifar10_without_source_says_where_to_put_files(monkeypatch, tmp_path):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  with pytest.raises(data.DataError, match="data_batch_1.bin"):
    data.load_dataset("cifar10")


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(ValueError, match="mnist, fashion_mnist, cifar10"):
    data.load_dataset("imagenet")


def test_xord_labels_follow_definition():
  ds = data.xord(seed=1, pairs=3, n_train=50, n_val=5, n_test=5)
  x = ds.train_x.reshape(50, 3, 2)
  expected = [any(p[0] == p[1] for p in row) for row in x]
  assert ds.train_y.tolist() == [int(e) for e in expected]


def test_teacher_student_targets_follow_definition():
  from scipy.special import erf

  ds = data.teacher_student(seed=3, input_dim=10, teacher_units=2, n_train=20, n_val=2, n_test=2)
  rng = np.random.default_rng(3)
  teacher = rng.standard_normal((2, 10))
  expected = erf(ds.train_x.astype(np.float64) @ teacher.T / np.sqrt(10) / np.sqrt(2)).sum(-1)
  np.testing.assert_allclose(ds.train_y, expected, rtol=1e-5, atol=1e-6)


def test_tfds_source_with_tfds_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = data.load_dataset("mnist", source="tfds", val_size=10)
  assert ds.source == "tensorflow-datasets"
  assert ds.train_x.shape[1:] == (28, 28, 1) and ds.train_x.dtype == np.uint8
  assert len(ds.val_y) == 10
