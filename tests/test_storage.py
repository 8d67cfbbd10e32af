import csv

import numpy as np

from redundancy_jax.core import data, storage


def test_csv_values_are_rounded_and_noise_is_zero(tmp_path):
  path = str(tmp_path / "t.csv")
  rows = [("fc1", 3, 0.9480000000000001, np.float32(0.123456789), 1.1e-16, ""), ("a,b", 0, 1.0, None, 0.25, "x")]
  storage.write_csv(path, ("layer", "level", "accuracy", "loss", "std", "note"), rows)
  text = open(path).read()
  assert text.splitlines()[1] == "fc1,3,0.948,0.123457,0,"
  assert list(csv.reader(open(path)))[2] == ["a,b", "0", "1", "", "0.25", "x"]  # quoted, read back whole
  assert storage.csv_value(-3e-13) == 0 and storage.csv_value(94.8) == "94.8" and storage.csv_value(7) == 7


def test_dataset_label_names_the_data_and_its_source():
  assert data.label(data.load_bundled_mnist().describe()) == "mnist, bundled MNIST test set (8,000/1,000/1,000)"
  assert data.label(data.xord(seed=0).describe()) == "xord, generated"
