"""Datasets as numpy arrays: MNIST, Fashion-MNIST, CIFAR-10, and generated data.

Sources, in the order `source="auto"` tries them:
1. files in `data_dir` in their documented binary formats (IDX `.gz` for MNIST/Fashion-MNIST, the
   CIFAR-10 *binary* version `data_batch_{1..5}.bin` / `test_batch.bin`);
2. a tensorflow-datasets copy already prepared on this machine (`tfds.data_source`, no TensorFlow,
   never downloads);
3. for Fashion-MNIST: Debian's official files (`apt-get install dataset-fashion-mnist`, in
   /usr/share/datasets/fashion-mnist/), the full-size real dataset every machine of ours can install;
4. for MNIST only: the real 10,000-image MNIST test set bundled with this package, split into
   train/validation/test. This is said loudly and recorded as the dataset's `source`.

Data read from files is recorded with each file's path, size and SHA-256 (`Dataset.describe`).

Images are kept as uint8 NHWC (the model standardises them on device with the dataset's `mean` and
`std`, see `models.create_model`), labels as int32.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from redundancy_jax.core.errors import BadOption

DATASETS = ("mnist", "fashion_mnist", "cifar10", "xord", "random_images")
# One image's shape (H, W, C) per dataset: what a network is traced with before any data is read.
IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3), "xord": (1, 8, 1),
                "random_images": (32, 32, 3)}
SOURCES = ("auto", "files", "tfds", "bundled")
BUNDLED_DIR = os.path.join(os.path.dirname(__file__), "data_files", "mnist")
BUNDLED_SPLIT = {"train": 8000, "validation": 1000, "test": 1000}
# Full-size datasets that a Debian package installs (the official IDX files), tried after --data_dir and tfds.
SYSTEM_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
SYSTEM_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}

# Per-channel normalisation statistics (MNIST's usual values; CIFAR-10's training-set values).
NORMALIZATION = {
  "mnist": ((0.1307,), (0.3081,)),
  "fashion_mnist": ((0.2860,), (0.3530,)),
  "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
_IDX_FILES = {
  "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_CIFAR_RECORD = 1 + 32 * 32 * 3


@dataclasses.dataclass
class Dataset:
  """Train / validation / test splits; images uint8 (N, H, W, C) or float32 for generated data."""

  name: str
  source: str
  train_x: np.ndarray
  train_y: np.ndarray
  val_x: np.ndarray
  val_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int
  mean: tuple[float, ...] = (0.0,)
  std: tuple[float, ...] = (1.0,)
  files: tuple[dict, ...] = ()  # the files read: path, bytes, sha256

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.train_x.shape[1:])

  def describe(self) -> dict:
    """What `results.json` records about the data actually used."""
    return {
      "name": self.name,
      "source": self.source,
      "sizes": {"train": len(self.train_y), "validation": len(self.val_y), "test": len(self.test_y)},
      "image_shape": list(self.image_shape),
      "normalization": {"mean": list(self.mean), "std": list(self.std)},
      "files": list(self.files),
    }


def label(described: dict) -> str:
  """A dataset and its source in one short line, for figure titles and table headers, from what
  `Dataset.describe` returned: "mnist, bundled MNIST test set (8,000/1,000/1,000)", "cifar10, files in
  /data/cifar", "xord, generated"."""
  return f"{described['name']}, {described['source']}"


class DataError(BadOption):
  """A dataset that cannot be read: names the file and the expected format."""


# ----------------------------------------------------------------------------- binary formats


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (gzipped or not): magic 0x0000080D with D dims of big-endian uint32 sizes."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    raise DataError(f"missing file {path} (expected an IDX file, gzipped as in the MNIST distribution)")
  except (OSError, EOFError) as e:
    raise DataError(f"cannot read {path}: {e} (expected a gzipped IDX file)") from e
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
    raise DataError(f"{path}: bad IDX magic number {raw[:4].hex()} (expected 0x00000801 or 0x00000803)")
  ndim = raw[3]
  header = 4 + 4 * ndim
  dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
  expected = header + int(np.prod(dims))
  if len(raw) != expected:
    raise DataError(f"{path}: IDX header promises dims {dims} ({expected} bytes) but file has {len(raw)}")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def read_idx_pair(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
  """Images (N, 28, 28, 1) uint8 and labels (N,) int32 from IDX files, checked against each other."""
  images, labels = read_idx(images_path), read_idx(labels_path)
  if images.ndim != 3:
    raise DataError(f"{images_path}: expected a 3-d IDX image file (magic 0x00000803), got {images.ndim}-d")
  if labels.ndim != 1 or len(labels) != len(images):
    raise DataError(f"{labels_path}: expected {len(images)} labels (magic 0x00000801), got {labels.shape}")
  return images[..., None], labels.astype(np.int32)


def read_cifar10_bin(path: str) -> tuple[np.ndarray, np.ndarray]:
  """CIFAR-10 binary version: records of 1 label byte + 3072 bytes (R, G, B planes of 32x32)."""
  try:
    raw = np.fromfile(path, np.uint8)
  except FileNotFoundError:
    raise DataError(f"missing file {path} (expected the CIFAR-10 binary version, cifar-10-binary.tar.gz)")
  if raw.size == 0 or raw.size % _CIFAR_RECORD:
    raise DataError(f"{path}: {raw.size} bytes is not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 records")
  records = raw.reshape(-1, _CIFAR_RECORD)
  labels = records[:, 0].astype(np.int32)
  if labels.max() > 9:
    raise DataError(f"{path}: label {labels.max()} out of range 0..9; is this the CIFAR-10 binary file?")
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels


# ----------------------------------------------------------------------------- splitting


def split_validation(x: np.ndarray, y: np.ndarray, val_size: int, seed: int):
  """Holds out `val_size` examples chosen by `seed`: returns (train_x, train_y, val_x, val_y)."""
  if not 0 < val_size < len(y):
    raise BadOption(f"validation size {val_size} must be in 1..{len(y) - 1}")
  order = np.random.default_rng(seed).permutation(len(y))
  val, train = np.sort(order[:val_size]), np.sort(order[val_size:])
  return x[train], y[train], x[val], y[val]


def class_subsets(seed: int, counts, num_classes: int) -> np.ndarray:
  """(K, num_classes) label maps of K replicas trained on class subsets (the report's open question):
  replica r keeps `counts[r]` classes drawn without replacement by the generator seeded with (seed, r),
  relabelled 0..C-1 in increasing order; map[r, c] is class c's new label, -1 when it is left out."""
  maps = np.full((len(counts), num_classes), -1, np.int32)
  for r, c in enumerate(counts):
    if not 2 <= c <= num_classes:
      raise BadOption(f"a class subset of {c} classes is outside 2..{num_classes} (the dataset's classes)")
    chosen = np.sort(np.random.default_rng([seed, r]).choice(num_classes, c, replace=False))
    maps[r, chosen] = np.arange(c)
  return maps


def _labelled(name, source, train, test, val_size, seed, files=()) -> Dataset:
  tx, ty, vx, vy = split_validation(*train, val_size, seed)
  mean, std = NORMALIZATION[name]
  return Dataset(name, source, tx, ty, vx, vy, test[0], test[1], 10, mean, std, tuple(files))


def file_record(path: str) -> dict:
  """What results record about a data file read: its path, size and SHA-256."""
  with open(path, "rb") as f:
    digest = hashlib.file_digest(f, "sha256").hexdigest()
  return {"path": os.path.abspath(path), "bytes": os.path.getsize(path), "sha256": digest}


# ----------------------------------------------------------------------------- sources


def _from_files(name: str, data_dir: str) -> tuple[tuple, tuple, list[str]]:
  """(train, test, the paths read) from the documented binary files in `data_dir`."""
  if name == "cifar10":
    folder = data_dir
    if os.path.isdir(os.path.join(data_dir, "cifar-10-batches-bin")):
      folder = os.path.join(data_dir, "cifar-10-batches-bin")
    paths = [os.path.join(folder, f"data_batch_{i}.bin") for i in range(1, 6)] + [os.path.join(folder, "test_batch.bin")]
    parts = [read_cifar10_bin(p) for p in paths]
    train = (np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]))
    return train, parts[5], paths
  paths = [os.path.join(data_dir, f) for s in ("train", "test") for f in _IDX_FILES[s]]
  return read_idx_pair(*paths[:2]), read_idx_pair(*paths[2:]), paths


def _from_tfds(name: str, data_dir: str | None) -> tuple[tuple, tuple]:
  import tensorflow_datasets as tfds  # imported lazily: slow, and optional for file users

  splits = []
  for split in ("train", "test"):
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    records = [source[i] for i in range(len(source))]
    x = np.stack([r["image"] for r in records]).astype(np.uint8)
    y = np.asarray([r["label"] for r in records], np.int32)
    splits.append((x, y))
  return splits[0], splits[1]


def load_bundled_mnist(seed: int = 0) -> Dataset:
  """The real MNIST test set shipped in the package, split 8,000 / 1,000 / 1,000 by `seed`."""
  x, y = read_idx_pair(
    os.path.join(BUNDLED_DIR, "t10k-images-idx3-ubyte.gz"), os.path.join(BUNDLED_DIR, "t10k-labels-idx1-ubyte.gz")
  )
  order = np.random.default_rng(seed).permutation(len(y))
  n_train, n_val, n_test = BUNDLED_SPLIT["train"], BUNDLED_SPLIT["validation"], BUNDLED_SPLIT["test"]
  a, b = n_train, n_train + n_val
  parts = [np.sort(order[:a]), np.sort(order[a:b]), np.sort(order[b : b + n_test])]
  mean, std = NORMALIZATION["mnist"]
  source = f"bundled MNIST test set ({n_train:,}/{n_val:,}/{n_test:,})"
  return Dataset("mnist", source, *(a for p in parts for a in (x[p], y[p])), 10, mean, std)


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
  """A loud warning, once per process (scripts load the same data more than once)."""
  if message not in _WARNED:
    _WARNED.add(message)
    logging.warning("!!! %s", message)


def from_config(cfg) -> Dataset:
  """The dataset a resolved `TrainConfig` trains on, with its seeded validation split."""
  return load_dataset(cfg.dataset, data_dir=cfg.data_dir, source=cfg.data_source, seed=cfg.seed, val_size=cfg.val_size)


def load_dataset(
  name: str, *, data_dir: str | None = None, source: str = "auto", seed: int = 0, val_size: int = 5000
) -> Dataset:
  """Loads dataset `name` (one of `DATASETS`) with a seeded validation split. See module docstring."""
  if name not in DATASETS:
    raise BadOption(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
  if source not in SOURCES:
    raise BadOption(f"unknown data source {source!r}; valid sources: {', '.join(SOURCES)}")
  if name in GENERATORS:
    return GENERATORS[name](seed=seed)
  if source == "bundled" or (source == "auto" and not data_dir and name == "mnist" and not _tfds_ready(name)):
    if name != "mnist":
      raise BadOption(f"only mnist has a bundled copy, not {name}")
    _warn_once(
      "NO MNIST FILES GIVEN AND NO PREPARED TFDS COPY: using the bundled MNIST *test* set (10,000 real images "
      "split 8,000/1,000/1,000). Pass --data_dir with the IDX files for full MNIST."
    )
    return load_bundled_mnist(seed)
  if source == "files" or (source == "auto" and data_dir and _has_files(name, data_dir)):
    if not data_dir:
      raise BadOption("source='files' needs data_dir")
    return _labelled_files(name, data_dir, val_size, seed)
  if source == "tfds" or _tfds_ready(name, data_dir):
    train, test = _from_tfds(name, data_dir)
    return _labelled(name, "tensorflow-datasets", train, test, val_size, seed)
  system = SYSTEM_DIRS.get(name)
  if source == "auto" and not data_dir and system and _has_files(name, system):
    return _labelled_files(name, system, val_size, seed)
  where = (
    "put the CIFAR-10 binary version (data_batch_1.bin .. data_batch_5.bin, test_batch.bin, from "
    "cifar-10-binary.tar.gz) in --data_dir, or prepare it with tensorflow-datasets"
    if name == "cifar10"
    else "put the IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-...) in --data_dir, "
    "or prepare it with tensorflow-datasets"
  )
  if system:
    where = f"install Debian's copy (`apt-get install {SYSTEM_PACKAGES[name]}`, read from {system}), or {where}"
  raise DataError(f"no source for {name}: {where}; looked in data_dir={data_dir!r}, tfds" + (f" and {system}" if system else ""))


def available(name: str, data_dir: str | None = None) -> bool:
  """Whether the full-size real dataset `name` can be read here without a network: files in
  `data_dir`, a prepared tfds copy, or the Debian package's files (the bundled MNIST subset does not count)."""
  system = SYSTEM_DIRS.get(name)
  return bool(
    (data_dir and _has_files(name, data_dir)) or _tfds_ready(name, data_dir) or (system and _has_files(name, system))
  )


def _labelled_files(name: str, folder: str, val_size: int, seed: int) -> Dataset:
  train, test, paths = _from_files(name, folder)
  return _labelled(name, f"files in {folder}", train, test, val_size, seed, [file_record(p) for p in paths])


def _has_files(name: str, data_dir: str) -> bool:
  if name == "cifar10":
    return any(
      os.path.exists(os.path.join(data_dir, sub, "test_batch.bin")) for sub in ("", "cifar-10-batches-bin")
    )
  return any(os.path.exists(os.path.join(data_dir, f)) for f in _IDX_FILES["test"])


def _tfds_ready(name: str, data_dir: str | None = None) -> bool:
  """Whether tfds has this dataset prepared locally; never touches the network."""
  root = data_dir or os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
  return os.path.isdir(os.path.join(root, name))


# ----------------------------------------------------------------------------- augmentation


def augment_batch(x_BxHxWxC: jax.Array, key: jax.Array, pad: int = 4) -> jax.Array:
  """Random crop after zero-padding by `pad` (black, in raw pixels), and a random horizontal flip, per
  image; on device, inside the training step."""
  b, h, w, _ = x_BxHxWxC.shape
  crop_key, flip_key = jax.random.split(key)
  offsets = jax.random.randint(crop_key, (b, 2), 0, 2 * pad + 1)
  padded = jnp.pad(x_BxHxWxC, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1]))
  x = jax.vmap(crop)(padded, offsets)
  flip = jax.random.bernoulli(flip_key, 0.5, (b, 1, 1, 1))
  return jnp.where(flip, x[:, :, ::-1], x)


# ----------------------------------------------------------------------------- generated data


def xord(seed: int = 0, *, pairs: int = 4, n_train: int = 2000, n_val: int = 500, n_test: int = 1000) -> Dataset:
  """Brutzkus and Globerson's XORD: d pairs in {-1, 1}; positive iff some pair is (1, 1) or (-1, -1).

  Both classes are equally likely, and each point is uniform within its class: uniform pairs would make
  1 - 2^-d of the points positive (15/16 for d = 4) and the task trivial. A negative point has every
  pair (1, -1) or (-1, 1); a positive one is a uniform point conditioned on some equal pair."""
  rng = np.random.default_rng(seed)
  n = n_train + n_val + n_test
  y = rng.permutation(np.arange(n) % 2).astype(np.int32)  # exactly balanced, shuffled
  first = rng.choice(np.array([-1.0, 1.0], np.float32), size=(n, pairs))
  x = np.stack([first, -first], -1)  # every pair different: negative
  positives = np.flatnonzero(y == 1)
  filled = 0
  while filled < len(positives):  # rejection sampling: a uniform point is positive with prob. 1 - 2^-d
    draw = rng.choice(np.array([-1.0, 1.0], np.float32), size=(2 * (len(positives) - filled) + 8, pairs, 2))
    draw = draw[np.any(draw[..., 0] == draw[..., 1], axis=1)][: len(positives) - filled]
    x[positives[filled : filled + len(draw)]] = draw
    filled += len(draw)
  x = x.reshape(len(x), 1, 2 * pairs, 1)  # a 1-pixel-high image of 2d values: conv over pairs
  a, b = n_train, n_train + n_val
  return Dataset("xord", "generated", x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:], 2)


def random_images(
  seed: int = 0, *, shape: tuple[int, ...] = (32, 32, 3), num_classes: int = 10, n_train: int = 2048,
  n_val: int = 512, n_test: int = 512,
) -> Dataset:
  """Learnable CIFAR-shaped uint8 images: each class is a fixed random template plus noise."""
  rng = np.random.default_rng(seed)
  templates = rng.uniform(0, 255, size=(num_classes, *shape))
  y = rng.integers(0, num_classes, n_train + n_val + n_test).astype(np.int32)
  x = np.clip(templates[y] * 0.6 + rng.uniform(0, 255, size=(len(y), *shape)) * 0.4, 0, 255).astype(np.uint8)
  a, b = n_train, n_train + n_val
  mean, std = (0.5,) * shape[-1], (0.25,) * shape[-1]
  return Dataset("random_images", "generated", x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:], num_classes, mean, std)


GENERATORS: dict[str, Callable[..., Dataset]] = {
  "xord": xord,
  "random_images": random_images,
}
