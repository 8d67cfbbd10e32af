import gzip
import hashlib
import os

import numpy as np
import pytest

from redundancy_jax.core import data


def test_reads_real_mnist_idx(bundled_mnist_dir):
  x, y = data.read_idx_pair(
    os.path.join(bundled_mnist_dir, "t10k-images-idx3-ubyte.gz"),
    os.path.join(bundled_mnist_dir, "t10k-labels-idx1-ubyte.gz"),
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


def _indexed_images(n, shape, marker, rng):
  """n random uint8 images whose first pixel values spell (index // 256, index % 256, marker)."""
  x = rng.integers(0, 256, (n, *shape)).astype(np.uint8)
  flat = x.reshape(n, -1)
  flat[:, 0], flat[:, 1], flat[:, 2] = np.arange(n) // 256, np.arange(n) % 256, marker
  return x


def _decode(x):
  """(index, marker) of each image written by `_indexed_images`, from the same bytes."""
  flat = x.reshape(len(x), -1).astype(np.int64)
  return flat[:, 0] * 256 + flat[:, 1], flat[:, 2]


def _write_indexed_files(name, folder, n_train, n_test, rng):
  """Training and test files of `name` holding distinct, numbered images labelled index % 10; returns
  the images as the loader gives them (N, H, W, C)."""
  shape = (28, 28, 1) if name == "mnist" else (32, 32, 3)
  train, test = _indexed_images(n_train, shape, 0, rng), _indexed_images(n_test, shape, 1, rng)
  if name == "mnist":
    for prefix, x in (("train", train), ("t10k", test)):
      _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x[..., 0])
      _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(len(x)) % 10)
    return train, test
  # CIFAR-10 binary records: a label byte, then the R, G, B planes; the training file in five batches
  def write(path, x, first):
    labels = (np.arange(len(x)) + first) % 10
    np.concatenate([labels[:, None], x.transpose(0, 3, 1, 2).reshape(len(x), -1)], 1).astype(np.uint8).tofile(path)

  for i, part in enumerate(np.array_split(np.arange(n_train), 5)):
    write(folder / f"data_batch_{i + 1}.bin", train[part], part[0])
  write(folder / "test_batch.bin", test, 0)
  return train, test


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_validation_split_of_files_is_disjoint_and_train_plus_val_is_the_training_file(tmp_path, name):
  n_train, n_test, val_size = 300, 40, 70
  train, test = _write_indexed_files(name, tmp_path, n_train, n_test, np.random.default_rng(0))
  ds = data.load_dataset(name, data_dir=str(tmp_path), val_size=val_size, seed=3)
  (train_ids, train_marks), (val_ids, val_marks) = _decode(ds.train_x), _decode(ds.val_x)
  test_ids, test_marks = _decode(ds.test_x)
  # train and validation come from the training file, test from the test file, all of it in order
  assert np.all(train_marks == 0) and np.all(val_marks == 0) and np.all(test_marks == 1)
  np.testing.assert_array_equal(test_ids, np.arange(n_test))
  # the validation split is disjoint from train, and the two together are the whole training file
  assert len(val_ids) == val_size and not set(train_ids) & set(val_ids)
  np.testing.assert_array_equal(np.sort(np.concatenate([train_ids, val_ids])), np.arange(n_train))
  # every image kept whole and with its own label
  for x, y, ids, source in ((ds.train_x, ds.train_y, train_ids, train), (ds.val_x, ds.val_y, val_ids, train),
                            (ds.test_x, ds.test_y, test_ids, test)):
    np.testing.assert_array_equal(x, source[ids])
    np.testing.assert_array_equal(y, ids % 10)
  # the split is fixed by the seed
  again = data.load_dataset(name, data_dir=str(tmp_path), val_size=val_size, seed=3)
  other = data.load_dataset(name, data_dir=str(tmp_path), val_size=val_size, seed=4)
  np.testing.assert_array_equal(_decode(again.val_x)[0], val_ids)
  assert set(_decode(other.val_x)[0]) != set(val_ids)


def test_bundled_validation_split_is_disjoint_and_the_splits_are_the_whole_file():
  x, y = data.read_idx_pair(
    os.path.join(data.BUNDLED_DIR, "t10k-images-idx3-ubyte.gz"),
    os.path.join(data.BUNDLED_DIR, "t10k-labels-idx1-ubyte.gz"),
  )
  index = {image.tobytes(): i for i, image in enumerate(x)}
  assert len(index) == 10_000  # the 10,000 images are distinct, so bytes identify an image
  ds = data.load_bundled_mnist(seed=0)
  ids = {split: np.array([index[image.tobytes()] for image in images])
         for split, images in (("train", ds.train_x), ("val", ds.val_x), ("test", ds.test_x))}
  assert {k: len(v) for k, v in ids.items()} == {"train": 8000, "val": 1000, "test": 1000}
  assert not set(ids["val"]) & set(ids["train"]) and not set(ids["val"]) & set(ids["test"])
  np.testing.assert_array_equal(np.sort(np.concatenate(list(ids.values()))), np.arange(10_000))
  for split, labels in (("train", ds.train_y), ("val", ds.val_y), ("test", ds.test_y)):
    np.testing.assert_array_equal(labels, y[ids[split]])


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


def test_xord_labels_follow_definition_and_classes_are_balanced_and_uniform():
  ds = data.xord(seed=1, pairs=2, n_train=16000, n_val=10, n_test=10)
  x = ds.train_x.reshape(-1, 2, 2)
  expected = [int(any(p[0] == p[1] for p in row)) for row in x]
  assert ds.train_y.tolist() == expected
  assert abs(ds.train_y.mean() - 0.5) < 0.01  # uniform pairs would give 1 - 2^-2 = 75% positive
  # d = 2: enumerate all 16 points by hand; 4 are negative (both pairs unequal), 12 positive, and each
  # point is equally likely within its class
  points = [tuple(int(v) for v in row.ravel()) for row in x]
  counts = {}
  for p, label in zip(points, ds.train_y):
    counts.setdefault(label, {}).setdefault(p, 0)
    counts[label][p] += 1
  assert len(counts[0]) == 4 and len(counts[1]) == 12
  for label, share in ((0, 1 / 4), (1, 1 / 12)):
    freq = np.array(list(counts[label].values())) / sum(counts[label].values())
    np.testing.assert_allclose(freq, share, atol=0.02)


def test_tfds_source_with_tfds_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = data.load_dataset("mnist", source="tfds", val_size=10)
  assert ds.source == "tensorflow-datasets"
  assert ds.train_x.shape[1:] == (28, 28, 1) and ds.train_x.dtype == np.uint8
  assert len(ds.val_y) == 10


DEBIAN_FASHION = data.SYSTEM_DIRS["fashion_mnist"]


@pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION), reason="apt-get install dataset-fashion-mnist (CI does)")
def test_fashion_mnist_from_debian_is_full_size_and_recorded():
  ds = data.load_dataset("fashion_mnist")
  assert ds.source == f"files in {DEBIAN_FASHION}"
  assert (len(ds.train_y), len(ds.val_y), len(ds.test_y)) == (55000, 5000, 10000)
  assert ds.image_shape == (28, 28, 1) and ds.train_x.dtype == np.uint8
  assert sorted(np.bincount(ds.test_y).tolist()) == [1000] * 10  # the official test set: 1,000 per class
  files = ds.describe()["files"]
  assert [os.path.basename(f["path"]) for f in files] == [
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
  with open(files[3]["path"], "rb") as f:
    assert files[3]["sha256"] == hashlib.sha256(f.read()).hexdigest() and files[3]["bytes"] == os.path.getsize(f.name)


def test_fashion_mnist_missing_says_how_to_install(monkeypatch, tmp_path):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
  monkeypatch.setitem(data.SYSTEM_DIRS, "fashion_mnist", str(tmp_path / "not_installed"))
  with pytest.raises(data.DataError, match=r"apt-get install dataset-fashion-mnist"):
    data.load_dataset("fashion_mnist")
