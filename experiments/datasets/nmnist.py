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
"""N-MNIST event files (Orchard et al. 2015).

The dataset is a directory ``<root>/Train/<digit>/*.bin`` and
``<root>/Test/<digit>/*.bin``, one recording per file, each event 5 bytes:

* byte 0: x (0..33), byte 1: y (0..33);
* byte 2, bit 7: polarity (1 = ON, 0 = OFF);
* bits 6..0 of byte 2, then bytes 3 and 4: a 23-bit timestamp in
  microseconds, big-endian: ``((b2 & 0x7F) << 16) | (b3 << 8) | b4``.

An entry with ``y == 240`` is a timestamp-overflow marker, not an event: the
published reference readers add ``2**13`` us to the timestamps of the marker
and of every later entry, and so do ``read_events`` and ``write_events``
(which inserts the markers needed to encode times from ``2**23`` us on). The
23-bit field wraps after 8.4 s while an N-MNIST recording lasts about 300 ms,
so the published files hold no markers; the increment is kept for
compatibility with those readers.

Frames are channels-last (NHWC, as the convolutional models expect):
``frames[n, t, y, x, p]`` counts the events of sample ``n`` in step ``t`` at
row ``y``, column ``x`` and polarity ``p`` (channel 0 = OFF, 1 = ON). Events
are binned with ``events.bin_times``: half-open bins of ``dt_us``
microseconds; events at or after the window end are dropped and counted.
"""

import os
from typing import Optional

from absl import logging
import numpy as np

from experiments.datasets import events
from experiments.tasks import base

SENSOR_SIZE = 34
OVERFLOW_Y = 240
OVERFLOW_INCREMENT_US = 2**13
_TIME_LIMIT_US = 2**23
EVENT_DTYPE = np.dtype(
    [("x", np.uint8), ("y", np.uint8), ("p", np.uint8), ("t", np.int64)]
)
_SPLITS = {"train": "Train", "test": "Test"}


def decode_events(
    raw: np.ndarray, name: str = "<bytes>", size: Optional[int] = SENSOR_SIZE
) -> np.ndarray:
  """Decodes the bytes of one recording.

  Args:
    raw: The file's bytes, as a uint8 array.
    name: Name of the source, for messages.
    size: Sensor width and height; events outside it raise. ``None`` skips
      the check.

  Returns:
    A structured array of ``EVENT_DTYPE`` (x, y, p, t in microseconds), in
    file order, overflow markers removed.

  Raises:
    ValueError: If the length is not a multiple of 5, or an event lies
      outside the sensor.
  """
  raw = np.asarray(raw, np.uint8).reshape(-1)
  if raw.size % 5:
    raise ValueError(
        f"{name}: {raw.size} bytes is not a multiple of 5 (5 bytes per "
        "event); the file is truncated or not an N-MNIST recording."
    )
  rows = raw.reshape(-1, 5).astype(np.int64)
  marker = rows[:, 1] == OVERFLOW_Y
  t = ((rows[:, 2] & 0x7F) << 16) | (rows[:, 3] << 8) | rows[:, 4]
  t = t + np.cumsum(marker) * OVERFLOW_INCREMENT_US
  rows, t = rows[~marker], t[~marker]
  out = np.empty((rows.shape[0],), EVENT_DTYPE)
  out["x"] = rows[:, 0]
  out["y"] = rows[:, 1]
  out["p"] = rows[:, 2] >> 7
  out["t"] = t
  if size is not None and rows.shape[0]:
    outside = (rows[:, 0] >= size) | (rows[:, 1] >= size)
    if outside.any():
      i = int(np.argmax(outside))
      raise ValueError(
          f"{name}: event {i} at (x={rows[i, 0]}, y={rows[i, 1]}) lies "
          f"outside the {size}x{size} sensor; pass the sensor size as size."
      )
  return out


def read_events(path: str, size: Optional[int] = SENSOR_SIZE) -> np.ndarray:
  """Reads one N-MNIST recording.

  Args:
    path: A ``.bin`` file.
    size: Sensor width and height (34 for N-MNIST); ``None`` skips the
      bounds check.

  Returns:
    A structured array of ``EVENT_DTYPE``: ``x``, ``y``, ``p`` (uint8) and
    ``t`` (int64 microseconds).

  Raises:
    ValueError: If the file is missing, truncated (size not a multiple of 5)
      or holds an event outside the sensor.
  """
  if not os.path.isfile(path):
    raise ValueError(f"{path}: no such N-MNIST recording.")
  return decode_events(np.fromfile(path, np.uint8), path, size)


def write_events(path: str, x, y, p, t) -> None:
  """Writes events in the N-MNIST format.

  Overflow markers are inserted where needed, following the reader: before
  an event whose time minus the increments so far does not fit in 23 bits,
  markers (``y = 240``, other fields 0) are written, each adding ``2**13``.

  Args:
    path: Output file (overwritten).
    x: Columns, integers in ``[0, 255]``.
    y: Rows, integers in ``[0, 255]`` other than 240 (the marker code).
    p: Polarities, 0 or 1.
    t: Times in microseconds, non-negative integers in non-decreasing order.

  Raises:
    ValueError: If the arrays differ in length or hold out-of-range values,
      or ``t`` decreases.
  """
  x, y, p, t = (np.asarray(a).reshape(-1) for a in (x, y, p, t))
  n = x.size
  if not y.size == p.size == t.size == n:
    raise ValueError(
        f"write_events({path}): x, y, p, t have lengths {x.size}, {y.size}, "
        f"{p.size}, {t.size}; they must match."
    )
  for field, values, low, high in (
      ("x", x, 0, 255),
      ("y", y, 0, 255),
      ("p", p, 0, 1),
      ("t", t, 0, np.iinfo(np.int64).max),
  ):
    if n and (
        values.dtype.kind not in "uib"
        or values.min() < low
        or values.max() > high
    ):
      raise ValueError(
          f"write_events({path}): {field} must hold integers in [{low}, "
          f"{high}], got dtype {values.dtype} in [{values.min()}, "
          f"{values.max()}]."
      )
  if n and np.any(y == OVERFLOW_Y):
    raise ValueError(
        f"write_events({path}): y = {OVERFLOW_Y} is the overflow marker code "
        "and cannot be an event's row."
    )
  t = t.astype(np.int64)
  if n and np.any(np.diff(t) < 0):
    raise ValueError(
        f"write_events({path}): t must be non-decreasing (recordings are in "
        "time order); sort the events by time."
    )
  # Markers written before each event: k[i] in all, the fewest that bring
  # t[i] - k[i] * 2**13 below 2**23.
  excess = np.maximum(t - (_TIME_LIMIT_US - 1), 0)
  k = -(-excess // OVERFLOW_INCREMENT_US)
  stamp = t - k * OVERFLOW_INCREMENT_US
  total = n + (int(k[-1]) if n else 0)
  rows = np.zeros((total, 5), np.uint8)
  rows[:, 1] = OVERFLOW_Y
  at = np.arange(n) + k
  rows[at, 0] = x
  rows[at, 1] = y
  rows[at, 2] = (p.astype(np.int64) << 7) | (stamp >> 16)
  rows[at, 3] = (stamp >> 8) & 0xFF
  rows[at, 4] = stamp & 0xFF
  rows.tofile(path)


def list_samples(root: str, split: str) -> tuple[list[str], np.ndarray]:
  """Lists the recordings of a split and their labels.

  Args:
    root: Dataset directory, holding ``Train`` and ``Test``.
    split: ``"train"`` or ``"test"`` (any case).

  Returns:
    ``(paths, labels)``: files sorted by label then name, and ``(N,)`` int32
    labels (the names of the integer-named class directories).

  Raises:
    ValueError: If the split is unknown, its directory is missing or holds no
      ``.bin`` file in an integer-named class directory.
  """
  key = str(split).lower()
  if key not in _SPLITS:
    raise ValueError(
        f"N-MNIST: split must be 'train' or 'test', got {split!r}."
    )
  directory = os.path.join(root, _SPLITS[key])
  if not os.path.isdir(directory):
    raise ValueError(
        f"{directory}: no such directory; the N-MNIST root must hold "
        f"{_SPLITS['train']}/<digit>/*.bin and {_SPLITS['test']}/<digit>/*.bin."
    )
  classes = sorted(
      (int(d), d)
      for d in os.listdir(directory)
      if d.isdigit() and os.path.isdir(os.path.join(directory, d))
  )
  paths, labels = [], []
  for label, d in classes:
    names = sorted(
        f for f in os.listdir(os.path.join(directory, d)) if f.endswith(".bin")
    )
    paths += [os.path.join(directory, d, f) for f in names]
    labels += [label] * len(names)
  if not paths:
    raise ValueError(
        f"{directory}: no .bin recording in an integer-named class directory "
        "(expected <digit>/*.bin)."
    )
  return paths, np.asarray(labels, np.int32)


def bin_split(
    root: str,
    split: str,
    num_steps: int,
    dt_us: Optional[float] = None,
    max_time_us: Optional[float] = None,
    size: int = SENSOR_SIZE,
) -> tuple[events.BinnedEvents, np.ndarray]:
  """Reads and bins a split sparsely, logging what was dropped.

  Args:
    root: Dataset directory.
    split: ``"train"`` or ``"test"``.
    num_steps: Number of time bins ``T``.
    dt_us: Bin width in microseconds, or ``None`` for ``max_time_us /
      num_steps``.
    max_time_us: End of the window in microseconds (default ``num_steps *
      dt_us``).
    size: Sensor width and height.

  Returns:
    ``(binned, labels)``, frames of shape ``(size, size, 2)``.

  Raises:
    ValueError: As ``list_samples``, ``read_events`` and ``events.window``.
  """
  paths, labels = list_samples(root, split)
  directory = os.path.join(root, _SPLITS[split.lower()])
  dt_us, end = events.window(directory, num_steps, dt_us, max_time_us, "_us")
  per_sample = []
  num_empty = num_events = num_dropped = 0
  for path in paths:
    ev = read_events(path, size)
    steps, keep = events.bin_times(ev["t"], num_steps, dt_us, end)
    num_empty += ev.size == 0
    num_events += ev.size
    num_dropped += int(ev.size - keep.sum())
    ev, steps = ev[keep], steps[keep]
    y, x, p = (ev[k].astype(np.int64) for k in ("y", "x", "p"))
    per_sample.append(((steps * size + y) * size + x) * 2 + p)
  logging.info(
      "%s: %d samples, %d empty, %d of %d events past the last bin "
      "(t >= %g us) dropped.",
      directory,
      len(paths),
      num_empty,
      num_dropped,
      num_events,
      end,
  )
  return events.pack(per_sample, num_steps, (size, size, 2)), labels


def load_nmnist(
    root: str,
    split: str,
    num_steps: int,
    dt_us: Optional[float] = None,
    max_time_us: Optional[float] = None,
    size: int = SENSOR_SIZE,
    dtype=np.float32,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads a split as dense event-count frames.

  Args:
    root: Dataset directory, holding ``Train`` and ``Test``.
    split: ``"train"`` or ``"test"``.
    num_steps: Number of time bins ``T``.
    dt_us: Bin width in microseconds, or ``None`` for ``max_time_us /
      num_steps``.
    max_time_us: End of the window in microseconds (default ``num_steps *
      dt_us``); recordings last about 300 ms.
    size: Sensor width and height.
    dtype: Dtype of the counts; an integer dtype must hold the largest count.

  Returns:
    ``(frames, labels)``: ``(N, T, size, size, 2)`` counts, channels-last
    (``frames[n, t, y, x, p]``), and ``(N,)`` int32 labels. The full
    training split at ``T = 100`` is 55 GB as float32: use ``nmnist_task``,
    which keeps the events sparse, for training.

  Raises:
    ValueError: As ``bin_split``.
  """
  binned, labels = bin_split(root, split, num_steps, dt_us, max_time_us, size)
  return events.dense(binned, dtype=dtype), labels


def nmnist_task(
    root: str,
    *,
    num_steps: int = 30,
    dt_us: Optional[float] = None,
    max_time_us: Optional[float] = 300_000,
    size: int = SENSOR_SIZE,
    readout_fraction: float = 1.0,
    name: str = "nmnist",
) -> base.Task:
  """Builds the N-MNIST classification ``Task``.

  Inputs are float32 count frames ``(T, B, size, size, 2)`` (NHWC per step),
  made per batch from the sparse events. The loss is read over the last
  ``readout_fraction`` of the steps (all steps by default), with weights
  summing to 1 per sample; see ``base.labelled_sequence_task`` for batching
  and evaluation.

  Args:
    root: Dataset directory, holding ``Train`` and ``Test``.
    num_steps: Number of time bins ``T``.
    dt_us: Bin width in microseconds, or ``None`` for ``max_time_us /
      num_steps``.
    max_time_us: End of the window in microseconds (300 ms covers a
      recording); ``None`` for ``num_steps * dt_us``.
    size: Sensor width and height.
    readout_fraction: Fraction of the last steps that carry the loss.
    name: Task name.

  Returns:
    The ``Task``, 10 classes, with ``eval_batches`` over the test split.

  Raises:
    ValueError: As ``bin_split``.
  """
  train, train_labels = bin_split(
      root, "train", num_steps, dt_us, max_time_us, size
  )
  test, test_labels = bin_split(
      root, "test", num_steps, dt_us, max_time_us, size
  )
  return base.labelled_sequence_task(
      name,
      train_inputs=lambda idx: events.dense(train, idx),
      train_labels=train_labels,
      test_inputs=lambda idx: events.dense(test, idx),
      test_labels=test_labels,
      num_steps=num_steps,
      input_shape=train.frame_shape,
      num_classes=10,
      readout_fraction=readout_fraction,
  )
