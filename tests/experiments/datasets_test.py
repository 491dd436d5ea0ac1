# Copyright 2026 The haiku_etp Authors. All Rights Reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
# ==============================================================================
"""Tests of the dataset loaders, on small files written in the real formats."""

import importlib.util
import os
import sys
import threading
import time
from unittest import mock

from absl import flags
from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from experiments.datasets import digits
from experiments.datasets import events
from experiments.datasets import nmnist
from experiments.datasets import shd
from experiments.tasks import prefetch

_HAS_H5PY = importlib.util.find_spec("h5py") is not None
_HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def _tempdir(test):
  """``test.create_tempdir()``, also under pytest (absl flags unparsed)."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  return test.create_tempdir().full_path


def _shd_samples(rng, n, max_time=1.6):
  """Random spike trains; sample 1 is empty."""
  times, units = [], []
  for i in range(n):
    k = 0 if i == 1 else int(rng.integers(1, 60))
    times.append(np.sort(rng.uniform(0, max_time, k)))
    units.append(rng.integers(0, shd.NUM_CHANNELS, k))
  return times, units


def _shd_expected(times, units, edges):
  """Counts ``(N, T, 700)`` with numpy's histogram over the stored times."""
  out = []
  for t, u in zip(times, units):
    t = np.asarray(t).astype(np.float16).astype(np.float64)
    keep = t < edges[-1]
    counts, _, _ = np.histogram2d(
        t[keep], u[keep], bins=[edges, np.arange(shd.NUM_CHANNELS + 1)]
    )
    out.append(counts)
  return np.stack(out)


def _write_raw_shd(path, times, units, labels, dtypes=None, skip=()):
  """Writes an SHD-like file with chosen dtypes, bypassing write_shd checks."""
  import h5py  # pylint: disable=g-import-not-at-top

  dtypes = dict(
      {"times": np.float16, "units": np.uint16, "labels": np.uint16},
      **(dtypes or {}),
  )
  with h5py.File(path, "w") as f:
    for key, values in (("times", times), ("units", units)):
      if f"spikes/{key}" in skip:
        continue
      data = np.empty((len(values),), object)
      for i, v in enumerate(values):
        data[i] = np.asarray(v, dtypes[key])
      f.create_dataset(
          f"spikes/{key}",
          data=data,
          dtype=h5py.vlen_dtype(np.dtype(dtypes[key])),
      )
    if "labels" not in skip:
      f.create_dataset("labels", data=np.asarray(labels, dtypes["labels"]))


@absltest.skipUnless(_HAS_H5PY, "h5py is not installed")
class ShdTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = _tempdir(self)
    self.rng = np.random.default_rng(0)

  def _path(self, name="shd_train.h5"):
    return os.path.join(self.dir, name)

  def test_counts_match_a_histogram(self):
    times, units = _shd_samples(self.rng, 6)
    shd.write_shd(self._path(), times, units, [0, 1, 2, 3, 4, 5])
    with self.assertLogs(level="INFO") as logs:
      counts, labels = shd.load_shd(self._path(), 50, 0.03)
    edges = np.arange(51) * 0.03
    expected = _shd_expected(times, units, edges)
    self.assertEqual(counts.shape, (6, 50, 700))
    self.assertEqual(counts.dtype, np.float32)
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(labels, np.arange(6))
    self.assertEqual(labels.dtype, np.int32)
    np.testing.assert_array_equal(counts[1], 0)  # The empty sample is kept.
    dropped = sum(int((t.astype(np.float16) >= 1.5).sum()) for t in times)
    self.assertGreater(dropped, 0)
    total = sum(t.size for t in times)
    self.assertIn(
        f"6 samples, 1 empty, {dropped} of {total} spikes past the last bin",
        "\n".join(logs.output),
    )

  def test_float16_times_near_the_overflow(self):
    t16 = np.array([0.0, 0.0009, 1.3994, 1.4, 1.4004, 1.44], np.float16)
    with np.errstate(over="ignore"):
      self.assertTrue(np.isinf(t16[3] * np.float16(1e6)))  # The hazard.
    units = np.arange(6)
    shd.write_shd(self._path(), [t16], [units], [3])
    counts, _ = shd.load_shd(self._path(), 1500, 1e-3)
    t64 = t16.astype(np.float64)
    expected = np.zeros((1500, 700))
    np.add.at(expected, (np.floor(t64 / 1e-3).astype(int), units), 1)
    np.testing.assert_array_equal(counts[0], expected)
    self.assertEqual(counts.sum(), 6)

  def test_pooling_sums_adjacent_channels(self):
    times, units = _shd_samples(self.rng, 4)
    shd.write_shd(self._path(), times, units, [1, 0, 1, 0])
    full, _ = shd.load_shd(self._path(), 20, None, max_time=1.0)
    pooled, _ = shd.load_shd(self._path(), 20, None, pool=7, max_time=1.0)
    self.assertEqual(pooled.shape, (4, 20, 100))
    np.testing.assert_array_equal(pooled, full.reshape(4, 20, 100, 7).sum(-1))
    with self.assertRaisesRegex(ValueError, "pool must be a divisor of 700"):
      shd.load_shd(self._path(), 20, 0.05, pool=3)

  def test_window_arguments(self):
    shd.write_shd(self._path(), [[0.1, 0.5]], [[1, 2]], [0])
    counts, _ = shd.load_shd(self._path(), 10, 0.1, max_time=0.5)
    self.assertEqual(counts.sum(), 1)  # t = 0.5 is past max_time.
    with self.assertRaisesRegex(ValueError, "max_time=2.0 exceeds"):
      shd.load_shd(self._path(), 10, 0.1, max_time=2.0)
    with self.assertRaisesRegex(ValueError, "give dt .* or max_time"):
      shd.load_shd(self._path(), 10, None)
    with self.assertRaisesRegex(ValueError, "dt must be positive"):
      shd.load_shd(self._path(), 10, -0.1)
    counts, _ = shd.load_shd(self._path(), 10, 0.1, dtype=np.uint8)
    self.assertEqual(counts.dtype, np.uint8)

  def test_writer_produces_the_published_layout(self):
    import h5py  # pylint: disable=g-import-not-at-top

    times, units = _shd_samples(self.rng, 3)
    extra = {"speaker": np.array([4, 5, 6]), "keys": np.array(["a", "bb"])}
    shd.write_shd(self._path(), times, units, [7, 8, 9], extra=extra)
    with h5py.File(self._path(), "r") as f:
      self.assertEqual(
          h5py.check_vlen_dtype(f["spikes/times"].dtype), np.float16
      )
      self.assertEqual(
          h5py.check_vlen_dtype(f["spikes/units"].dtype), np.uint16
      )
      self.assertEqual(f["labels"].dtype, np.uint16)
      self.assertEqual(f["spikes/times"].shape, (3,))
    data = shd.read_shd(self._path())
    for got, want in zip(data.times, times):
      np.testing.assert_array_equal(got, np.asarray(want, np.float16))
    for got, want in zip(data.units, units):
      np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(data.extra["speaker"], [4, 5, 6])
    self.assertEqual(list(data.extra["keys"]), [b"a", b"bb"])

  def test_writer_rejects_bad_values(self):
    with self.assertRaisesRegex(ValueError, "units must be integers in"):
      shd.write_shd(self._path(), [[0.1]], [[700]], [0])
    with self.assertRaisesRegex(ValueError, "not finite in float16"):
      shd.write_shd(self._path(), [[1e5]], [[0]], [0])
    with self.assertRaisesRegex(ValueError, "1 time arrays, 1 unit arrays"):
      shd.write_shd(self._path(), [[0.1]], [[0]], [0, 1])

  def test_missing_file(self):
    with self.assertRaisesRegex(ValueError, "nothere.h5: no such file"):
      shd.load_shd(self._path("nothere.h5"), 10, 0.1)

  @parameterized.parameters("spikes/times", "spikes/units", "labels")
  def test_missing_field(self, field):
    _write_raw_shd(self._path(), [[0.1]], [[3]], [0], skip=(field,))
    with self.assertRaisesRegex(
        ValueError, f"shd_train.h5: field '{field}' is missing"
    ):
      shd.read_shd(self._path())

  @parameterized.parameters(
      ("times", np.int32, "spikes/times"),
      ("units", np.float32, "spikes/units"),
      ("labels", np.float32, "labels"),
  )
  def test_wrong_dtype(self, key, dtype, field):
    _write_raw_shd(self._path(), [[0.1]], [[3]], [0], dtypes={key: dtype})
    with self.assertRaisesRegex(
        ValueError, f"shd_train.h5: field '{field}' has dtype"
    ):
      shd.read_shd(self._path())

  def test_length_mismatches(self):
    _write_raw_shd(self._path(), [[0.1, 0.2]], [[3]], [0])
    with self.assertRaisesRegex(
        ValueError, "shd_train.h5: sample 0 has 2 entries in 'spikes/times'"
    ):
      shd.read_shd(self._path())
    _write_raw_shd(self._path(), [[0.1], [0.2]], [[3]], [0, 1])
    with self.assertRaisesRegex(
        ValueError, "field 'spikes/times' has 2 samples but 'spikes/units'"
    ):
      shd.read_shd(self._path())
    _write_raw_shd(self._path(), [[0.1]], [[3]], [0, 1])
    with self.assertRaisesRegex(
        ValueError, "shd_train.h5: field 'labels' has 2 entries"
    ):
      shd.read_shd(self._path())

  def test_bad_values_in_the_file(self):
    _write_raw_shd(self._path(), [[0.1], [0.2, 0.3]], [[3], [5, 700]], [0, 1])
    with self.assertRaisesRegex(
        ValueError, "field 'spikes/units' of sample 1 holds unit 700"
    ):
      shd.read_shd(self._path())
    _write_raw_shd(self._path(), [[-0.1]], [[3]], [0])
    with self.assertRaisesRegex(
        ValueError, "field 'spikes/times' of sample 0 holds -0.09"
    ):
      shd.read_shd(self._path())

  def test_not_hdf5(self):
    with open(self._path(), "w") as f:
      f.write("not hdf5")
    with self.assertRaisesRegex(ValueError, "not a readable HDF5 file"):
      shd.read_shd(self._path())

  def test_task(self):
    train_t, train_u = _shd_samples(self.rng, 9, max_time=1.0)
    test_t, test_u = _shd_samples(self.rng, 5, max_time=1.0)
    shd.write_shd(self._path(), train_t, train_u, np.arange(9) % 3)
    shd.write_shd(self._path("shd_test.h5"), test_t, test_u, np.arange(5) % 3)
    task = shd.shd_task(
        self._path(),
        self._path("shd_test.h5"),
        num_steps=20,
        max_time=1.0,
        pool=10,
        readout_fraction=0.25,
    )
    self.assertEqual(task.input_shape, (70,))
    self.assertEqual(task.output_size, 3)
    batch = task.batch(0, 4)
    self.assertEqual(batch.xs.shape, (20, 4, 70))
    np.testing.assert_allclose(batch.mask[:15], 0.0)
    np.testing.assert_allclose(batch.mask[15:], 0.2)
    dense, labels = shd.load_shd(
        self._path("shd_test.h5"), 20, None, pool=10, max_time=1.0
    )
    got = list(task.eval_batches(2))
    self.assertLen(got, 3)
    xs = np.concatenate([b.xs for b in got], axis=1)
    np.testing.assert_array_equal(xs[:, :5], np.moveaxis(dense, 0, 1))
    np.testing.assert_array_equal(got[-1].mask.sum(0) > 0, [True, False])
    np.testing.assert_array_equal(
        np.concatenate([b.ys[0] for b in got])[:5], labels
    )


def _event_bytes(x, y, p, t):
  """Encodes one 5-byte N-MNIST entry by hand."""
  return bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])


class NmnistTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = _tempdir(self)
    self.rng = np.random.default_rng(1)

  def _write(self, split, label, name, x, y, p, t):
    directory = os.path.join(self.root, split, str(label))
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    nmnist.write_events(path, x, y, p, t)
    return path

  def _random_events(self, n, max_t=330_000):
    t = np.sort(self.rng.integers(0, max_t, n))
    return (
        self.rng.integers(0, 34, n),
        self.rng.integers(0, 34, n),
        self.rng.integers(0, 2, n),
        t,
    )

  def test_decodes_hand_written_bytes_with_an_overflow_marker(self):
    raw = (
        _event_bytes(3, 4, 1, 0x7FFFFF)
        + _event_bytes(0, 240, 0, 0)  # Overflow marker.
        + _event_bytes(33, 0, 0, 5)
        + _event_bytes(1, 2, 1, 0x012345)
    )
    path = os.path.join(self.root, "one.bin")
    with open(path, "wb") as f:
      f.write(raw)
    ev = nmnist.read_events(path)
    np.testing.assert_array_equal(ev["x"], [3, 33, 1])
    np.testing.assert_array_equal(ev["y"], [4, 0, 2])
    np.testing.assert_array_equal(ev["p"], [1, 0, 1])
    np.testing.assert_array_equal(
        ev["t"], [0x7FFFFF, 5 + 2**13, 0x012345 + 2**13]
    )

  def test_writer_round_trip_with_overflow(self):
    x, y, p, t = self._random_events(50)
    t[-3:] = [2**23 - 1, 2**23 + 7, 2**23 + 3 * 2**13 + 1]
    path = self._write("Train", 0, "a.bin", x, y, p, t)
    ev = nmnist.read_events(path)
    for field, want in (("x", x), ("y", y), ("p", p), ("t", t)):
      np.testing.assert_array_equal(ev[field], want)
    # 2**23 + 7 needs one marker, 2**23 + 3 * 2**13 + 1 four in all.
    self.assertEqual(os.path.getsize(path), 5 * (50 + 4))

  def test_load_matches_direct_binning(self):
    samples = {}
    for label, name in ((2, "b.bin"), (0, "a.bin"), (2, "a.bin"), (7, "c.bin")):
      samples[(label, name)] = self._random_events(80)
      self._write("Train", label, name, *samples[(label, name)])
    self._write("Train", 5, "empty.bin", [], [], [], [])
    with self.assertLogs(level="INFO") as logs:
      frames, labels = nmnist.load_nmnist(self.root, "train", 30, dt_us=10_000)
    order = [(0, "a.bin"), (2, "a.bin"), (2, "b.bin"), (5, "empty.bin")]
    order.append((7, "c.bin"))
    np.testing.assert_array_equal(labels, [k[0] for k in order])
    self.assertEqual(frames.shape, (5, 30, 34, 34, 2))
    self.assertEqual(frames.dtype, np.float32)
    dropped = 0
    for i, key in enumerate(order):
      expected = np.zeros((30, 34, 34, 2))
      if key in samples:
        x, y, p, t = samples[key]
        keep = t < 300_000
        dropped += int((~keep).sum())
        np.add.at(expected, (t[keep] // 10_000, y[keep], x[keep], p[keep]), 1)
      np.testing.assert_array_equal(frames[i], expected)
    self.assertGreater(dropped, 0)
    self.assertIn(
        f"5 samples, 1 empty, {dropped} of 320 events past the last bin",
        "\n".join(logs.output),
    )

  def test_truncated_file(self):
    path = os.path.join(self.root, "bad.bin")
    with open(path, "wb") as f:
      f.write(_event_bytes(1, 1, 0, 10) + b"\x01\x02")
    with self.assertRaisesRegex(
        ValueError, "bad.bin: 7 bytes is not a multiple of 5"
    ):
      nmnist.read_events(path)

  def test_event_outside_the_sensor(self):
    path = self._write("Test", 1, "x.bin", [1, 34], [2, 3], [0, 1], [5, 6])
    with self.assertRaisesRegex(
        ValueError, r"x.bin: event 1 at \(x=34, y=3\) lies outside the 34x34"
    ):
      nmnist.load_nmnist(self.root, "test", 10, dt_us=1000)
    self.assertLen(nmnist.read_events(path, size=None), 2)

  def test_writer_rejects_bad_events(self):
    path = os.path.join(self.root, "w.bin")
    with self.assertRaisesRegex(ValueError, "y = 240 is the overflow marker"):
      nmnist.write_events(path, [0], [240], [0], [0])
    with self.assertRaisesRegex(ValueError, "t must be non-decreasing"):
      nmnist.write_events(path, [0, 0], [0, 0], [0, 0], [5, 4])
    with self.assertRaisesRegex(ValueError, "p must hold integers in"):
      nmnist.write_events(path, [0], [0], [2], [0])

  def test_missing_split(self):
    with self.assertRaisesRegex(ValueError, "Train: no such directory"):
      nmnist.load_nmnist(self.root, "train", 10, dt_us=1000)
    with self.assertRaisesRegex(ValueError, "split must be 'train' or 'test'"):
      nmnist.load_nmnist(self.root, "val", 10, dt_us=1000)
    os.makedirs(os.path.join(self.root, "Test", "notes"))
    with self.assertRaisesRegex(ValueError, "Test: no .bin recording"):
      nmnist.load_nmnist(self.root, "test", 10, dt_us=1000)

  def test_task(self):
    for split, n in (("Train", 6), ("Test", 3)):
      for i in range(n):
        self._write(split, i % 10, f"{i}.bin", *self._random_events(40))
    task = nmnist.nmnist_task(self.root, num_steps=10)
    self.assertEqual(task.input_shape, (34, 34, 2))
    self.assertEqual(task.output_size, 10)
    batch = task.batch(0, 4)
    self.assertEqual(batch.xs.shape, (10, 4, 34, 34, 2))
    self.assertEqual(batch.xs.dtype, np.float32)
    frames, labels = nmnist.load_nmnist(
        self.root, "test", 10, max_time_us=300_000
    )
    got = list(task.eval_batches(2))
    xs = np.concatenate([b.xs for b in got], axis=1)
    np.testing.assert_array_equal(xs[:, :3], np.moveaxis(frames, 0, 1))
    np.testing.assert_array_equal(got[1].ys[0, :1], labels[2:])


class EventsTest(absltest.TestCase):

  def test_bin_edges_are_half_open(self):
    steps, keep = events.bin_times(np.array([0.0, 0.1, 0.2, 0.3]), 3, 0.1, 0.3)
    np.testing.assert_array_equal(steps[keep], [0, 1, 2])
    np.testing.assert_array_equal(keep, [True, True, True, False])

  def test_dense_subsets_and_integer_overflow(self):
    binned = events.pack(
        [np.array([0, 0, 5]), np.array([], int), np.full(300, 1)], 3, (2,)
    )
    np.testing.assert_array_equal(
        events.dense(binned, [2, 0])[:, :, :].reshape(2, 6),
        [[0, 300, 0, 0, 0, 0], [2, 0, 0, 0, 0, 1]],
    )
    with self.assertRaisesRegex(ValueError, "a bin holds 300 events"):
      events.dense(binned, dtype=np.uint8)
    with self.assertRaisesRegex(ValueError, r"indices must be in \[0, 3\)"):
      events.dense(binned, [3])


@absltest.skipUnless(_HAS_SKLEARN, "scikit-learn is not installed")
class DigitsTest(absltest.TestCase):

  def test_shapes_and_values(self):
    train_x, train_y, test_x, test_y = digits.load_digits_sequences("rows")
    self.assertEqual(train_x.shape, (1438, 8, 8))
    self.assertEqual(test_x.shape, (359, 8, 8))
    self.assertEqual(train_x.dtype, np.float32)
    self.assertEqual(train_y.dtype, np.int32)
    self.assertEqual(float(train_x.min()), 0.0)
    self.assertEqual(float(train_x.max()), 1.0)
    pixels = digits.load_digits_sequences("pixels")
    self.assertEqual(pixels[0].shape, (1438, 64, 1))
    np.testing.assert_array_equal(pixels[0].reshape(-1, 8, 8), train_x)
    np.testing.assert_array_equal(pixels[3], test_y)

  def test_split_is_fixed_stratified_and_disjoint(self):
    from sklearn import datasets  # pylint: disable=g-import-not-at-top

    labels = datasets.load_digits().target
    train, test = digits.split_indices(labels)
    again = digits.split_indices(labels)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(test, again[1])
    self.assertEmpty(np.intersect1d(train, test))
    self.assertEqual(train.size + test.size, labels.size)
    per_class = np.bincount(labels[test], minlength=10)
    expected = np.round(0.2 * np.bincount(labels, minlength=10))
    np.testing.assert_array_equal(per_class, expected)
    other, _ = digits.split_indices(labels, split_seed=1)
    self.assertFalse(np.array_equal(train, other))

  def test_task(self):
    task = digits.digits_task("pixels", readout_fraction=0.5)
    self.assertEqual((task.num_steps, task.input_shape), (64, (1,)))
    batch = task.batch(0, 8)
    self.assertEqual(batch.xs.shape, (64, 8, 1))
    np.testing.assert_allclose(batch.mask.sum(0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(batch.mask[:32], 0.0)
    self.assertEqual(sum(1 for _ in task.eval_batches(100)), 4)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "mode must be one of"):
      digits.digits_task("columns")
    with self.assertRaisesRegex(ValueError, "test_fraction must be in"):
      digits.load_digits_sequences(test_fraction=1.0)


def _count_up(n, record=None, fail_at=None):
  for i in range(n):
    if i == fail_at:
      raise KeyError(f"source failed at {i}")
    if record is not None:
      record.append(i)
    yield i


class OptionalDependencyTest(absltest.TestCase):

  def test_missing_h5py(self):
    with mock.patch.dict(sys.modules, {"h5py": None}):
      with self.assertRaisesRegex(ImportError, "pip install h5py"):
        shd.read_shd("shd_train.h5")

  def test_missing_sklearn(self):
    with mock.patch.dict(sys.modules, {"sklearn": None}):
      with self.assertRaisesRegex(ImportError, "pip install scikit-learn"):
        digits.digits_task()


class PrefetchTest(absltest.TestCase):

  def test_order_is_kept(self):
    self.assertEqual(
        list(prefetch.prefetch(_count_up(200), size=3)), list(range(200))
    )

  def test_exceptions_reach_the_consumer(self):
    it = prefetch.prefetch(_count_up(10, fail_at=4))
    got = [next(it) for _ in range(4)]
    self.assertEqual(got, [0, 1, 2, 3])
    with self.assertRaisesRegex(KeyError, "source failed at 4"):
      next(it)
    with self.assertRaises(StopIteration):
      next(it)

  def test_buffer_is_bounded_and_close_stops_the_producer(self):
    produced = []
    it = prefetch.prefetch(_count_up(10**9, record=produced), size=2)
    deadline = time.monotonic() + 5
    while len(produced) < 3 and time.monotonic() < deadline:
      time.sleep(0.005)
    time.sleep(0.05)
    self.assertEqual(len(produced), 3)  # Two queued, one waiting to be.
    self.assertEqual(next(it), 0)
    self.assertTrue(it.close())
    self.assertFalse(
        any(t.name.startswith("prefetch-") for t in threading.enumerate())
    )

  def test_context_manager_closes(self):
    with prefetch.prefetch(_count_up(10**9)) as it:
      self.assertEqual(next(it), 0)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
        t.name.startswith("prefetch-") for t in threading.enumerate()
    ):
      time.sleep(0.01)
    self.assertFalse(
        any(t.name.startswith("prefetch-") for t in threading.enumerate())
    )

  def test_bad_size(self):
    with self.assertRaisesRegex(ValueError, "prefetch: size must be >= 1"):
      prefetch.prefetch([], size=0)
    with self.assertRaisesRegex(TypeError, "prefetch: size must be an int"):
      prefetch.prefetch([], size=1.5)


if __name__ == "__main__":
  absltest.main()
