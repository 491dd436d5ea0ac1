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
"""Spiking Heidelberg Digits (SHD) and Spiking Speech Commands (SSC) files.

Both datasets ship as HDF5 files (``shd_train.h5``, ``shd_test.h5``,
``ssc_train.h5``, ...) with one sample per index:

* ``spikes/times``: variable-length float16 arrays, spike times in seconds;
* ``spikes/units``: variable-length uint16 arrays, the channel (0..699) of
  each spike;
* ``labels``: uint16 class labels (20 classes for SHD, 35 for SSC);
* ``extra/...``: metadata such as ``extra/speaker`` and ``extra/keys``.

Times are cast to float64 before any arithmetic: float16 cannot represent
times scaled to milliseconds or microseconds (1.4 s * 1e6 overflows to inf).
Spikes are binned with ``events.bin_times`` (half-open bins of width ``dt``
seconds; spikes at or after the window end are dropped and counted); pooling
sums the counts of ``pool`` adjacent channels, so channel ``u`` lands in
feature ``u // pool``. The reader accepts any float dtype for times and any
integer dtype for units and labels, and rejects everything else.

h5py is imported when a file is read or written.
"""

import os
from typing import Any, NamedTuple, Optional, Sequence

from absl import logging
import numpy as np

from experiments.datasets import events
from experiments.tasks import base

NUM_CHANNELS = 700
_FIELDS = ("spikes/times", "spikes/units", "labels")


def _h5py():
  try:
    import h5py  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "SHD/SSC files are HDF5: install h5py (pip install h5py)."
    ) from e
  return h5py


class ShdData(NamedTuple):
  """The contents of one SHD/SSC file.

  Attributes:
    times: Per sample, the spike times in seconds as stored (float16 in the
      published files).
    units: Per sample, the channel of each spike, int64 in ``[0, 700)``.
    labels: ``(N,)`` int32 labels.
    extra: The ``extra`` group as nested dicts of numpy arrays (empty if the
      file has none).
    path: The file read.
  """

  times: list[np.ndarray]
  units: list[np.ndarray]
  labels: np.ndarray
  extra: dict[str, Any]
  path: str


def _read_group(group) -> dict[str, Any]:
  out = {}
  for key, item in group.items():
    out[key] = _read_group(item) if hasattr(item, "keys") else item[()]
  return out


def _vlen(h5py, f, path, field, kinds, expected):
  """Returns a 1-D variable-length dataset's arrays after dtype checks."""
  ds = f[field]
  base_dtype = h5py.check_vlen_dtype(ds.dtype)
  if base_dtype is None or base_dtype.kind not in kinds or ds.ndim != 1:
    raise ValueError(
        f"{path}: field '{field}' has dtype {ds.dtype} and shape {ds.shape}; "
        f"expected a 1-D dataset of variable-length {expected} arrays (the "
        "published SHD/SSC layout, as written by write_shd)."
    )
  return list(ds[()])


def read_shd(path: str) -> ShdData:
  """Reads and validates one SHD/SSC file.

  Args:
    path: Path of an ``.h5`` file in the published layout.

  Returns:
    The ``ShdData``.

  Raises:
    ValueError: If the file is missing or unreadable, a field is missing or
      has the wrong dtype, the sample counts of ``spikes/times``,
      ``spikes/units`` and ``labels`` differ, a sample's times and units
      differ in length, a time is negative or not finite, or a unit is not
      in ``[0, 700)``. The message names the file and the field.
    ImportError: If h5py is not installed.
  """
  h5py = _h5py()
  if not os.path.isfile(path):
    raise ValueError(
        f"{path}: no such file; expected an SHD/SSC HDF5 file such as "
        "shd_train.h5."
    )
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise ValueError(f"{path}: not a readable HDF5 file ({e}).") from e
  with f:
    for field in _FIELDS:
      if field not in f:
        raise ValueError(
            f"{path}: field '{field}' is missing; an SHD/SSC file holds "
            f"{', '.join(_FIELDS)}."
        )
    times = _vlen(h5py, f, path, "spikes/times", "f", "float (float16)")
    units = _vlen(h5py, f, path, "spikes/units", "ui", "integer (uint16)")
    labels_ds = f["labels"]
    if labels_ds.dtype.kind not in "ui" or labels_ds.ndim != 1:
      raise ValueError(
          f"{path}: field 'labels' has dtype {labels_ds.dtype} and shape "
          f"{labels_ds.shape}; expected a 1-D integer (uint16) array."
      )
    labels = labels_ds[()]
    extra = _read_group(f["extra"]) if "extra" in f else {}
  if len(times) != len(units):
    raise ValueError(
        f"{path}: field 'spikes/times' has {len(times)} samples but "
        f"'spikes/units' has {len(units)}; they must match."
    )
  if len(labels) != len(times):
    raise ValueError(
        f"{path}: field 'labels' has {len(labels)} entries but 'spikes/times'"
        f" has {len(times)} samples; they must match."
    )
  if labels.size and labels.min() < 0:
    raise ValueError(
        f"{path}: field 'labels' holds {labels.min()}; labels must be >= 0."
    )
  checked_units = []
  for i, (t, u) in enumerate(zip(times, units)):
    if t.shape != u.shape:
      raise ValueError(
          f"{path}: sample {i} has {t.size} entries in 'spikes/times' but "
          f"{u.size} in 'spikes/units'; they must match."
      )
    if t.size:
      t64 = t.astype(np.float64)
      if not np.all(np.isfinite(t64)) or t64.min() < 0:
        bad = t64[~(np.isfinite(t64) & (t64 >= 0))][0]
        raise ValueError(
            f"{path}: field 'spikes/times' of sample {i} holds {bad}; times "
            "must be finite and >= 0 seconds."
        )
      u = u.astype(np.int64)
      if u.min() < 0 or u.max() >= NUM_CHANNELS:
        bad = u[(u < 0) | (u >= NUM_CHANNELS)][0]
        raise ValueError(
            f"{path}: field 'spikes/units' of sample {i} holds unit {bad}; "
            f"units must be in [0, {NUM_CHANNELS})."
        )
    checked_units.append(u.astype(np.int64))
  return ShdData(
      times=times,
      units=checked_units,
      labels=labels.astype(np.int32),
      extra=extra,
      path=path,
  )


def write_shd(
    path: str,
    times_list: Sequence[np.ndarray],
    units_list: Sequence[np.ndarray],
    labels: Sequence[int],
    extra: Optional[dict[str, Any]] = None,
) -> None:
  """Writes a file in the published SHD/SSC layout.

  Args:
    path: Output ``.h5`` path (overwritten).
    times_list: Per sample, spike times in seconds; stored as float16.
    units_list: Per sample, channels in ``[0, 700)``; stored as uint16.
    labels: One label per sample, in ``[0, 65535]``; stored as uint16.
    extra: Optional metadata, written under ``extra/``: a dict of arrays
      (strings become variable-length UTF-8) or nested dicts (groups).

  Raises:
    ValueError: If the lengths differ, a time is negative or not finite in
      float16, a unit is out of range or a label does not fit uint16.
    ImportError: If h5py is not installed.
  """
  h5py = _h5py()
  n = len(times_list)
  if len(units_list) != n or len(labels) != n:
    raise ValueError(
        f"write_shd({path}): got {n} time arrays, {len(units_list)} unit "
        f"arrays and {len(labels)} labels; they must match."
    )
  times16, units16 = [], []
  for i, (t, u) in enumerate(zip(times_list, units_list)):
    t = np.asarray(t, np.float64).reshape(-1)
    u = np.asarray(u).reshape(-1)
    if t.shape != u.shape:
      raise ValueError(
          f"write_shd({path}): sample {i} has {t.size} times and {u.size} "
          "units; they must match."
      )
    with np.errstate(over="ignore"):
      t16 = t.astype(np.float16)
    if t.size and (not np.all(np.isfinite(t16)) or t.min() < 0):
      raise ValueError(
          f"write_shd({path}): sample {i} holds a time that is negative or "
          "not finite in float16 (max 65504 s)."
      )
    if u.size and (
        u.dtype.kind not in "ui" or u.min() < 0 or u.max() >= NUM_CHANNELS
    ):
      raise ValueError(
          f"write_shd({path}): sample {i} has units of dtype {u.dtype} in "
          f"[{u.min()}, {u.max()}]; units must be integers in "
          f"[0, {NUM_CHANNELS})."
      )
    times16.append(t16)
    units16.append(u.astype(np.uint16))
  labels = np.asarray(labels)
  if labels.size and (
      labels.dtype.kind not in "ui" or labels.min() < 0 or labels.max() > 65535
  ):
    raise ValueError(
        f"write_shd({path}): labels must be integers in [0, 65535], got dtype "
        f"{labels.dtype}."
    )

  def objects(arrays):
    out = np.empty((n,), object)
    for i, a in enumerate(arrays):
      out[i] = a
    return out

  with h5py.File(path, "w") as f:
    spikes = f.create_group("spikes")
    spikes.create_dataset(
        "times",
        data=objects(times16),
        dtype=h5py.vlen_dtype(np.dtype(np.float16)),
    )
    spikes.create_dataset(
        "units",
        data=objects(units16),
        dtype=h5py.vlen_dtype(np.dtype(np.uint16)),
    )
    f.create_dataset("labels", data=labels.astype(np.uint16))
    if extra:
      _write_group(h5py, f.create_group("extra"), extra)


def _write_group(h5py, group, values):
  for key, value in values.items():
    if isinstance(value, dict):
      _write_group(h5py, group.create_group(key), value)
      continue
    value = np.asarray(value)
    if value.dtype.kind == "U":
      group.create_dataset(
          key, data=value.astype(object), dtype=h5py.string_dtype()
      )
    else:
      group.create_dataset(key, data=value)


class BinStats(NamedTuple):
  """What binning one file kept and dropped.

  Attributes:
    num_samples: Samples in the file.
    num_empty: Samples without any spike in the file.
    num_spikes: Spikes in the file.
    num_dropped: Spikes at or after the window end, dropped.
  """

  num_samples: int
  num_empty: int
  num_spikes: int
  num_dropped: int


def bin_shd(
    data: ShdData,
    num_steps: int,
    dt: Optional[float],
    pool: int = 1,
    max_time: Optional[float] = None,
) -> tuple[events.BinnedEvents, BinStats]:
  """Bins the spikes of a file, sparsely, and logs what was dropped.

  Args:
    data: From ``read_shd``.
    num_steps: Number of time bins ``T``.
    dt: Bin width in seconds, or ``None`` for ``max_time / num_steps``.
    pool: Adjacent channels summed into one feature; must divide 700.
    max_time: End of the window in seconds (default ``num_steps * dt``).

  Returns:
    ``(binned, stats)``; ``binned`` has frames of shape ``(700 // pool,)``.

  Raises:
    ValueError: If ``pool`` does not divide 700 or the window is invalid.
  """
  if (
      isinstance(pool, bool)
      or not isinstance(pool, (int, np.integer))
      or pool < 1
      or NUM_CHANNELS % pool
  ):
    divisors = [d for d in range(1, NUM_CHANNELS + 1) if NUM_CHANNELS % d == 0]
    raise ValueError(
        f"{data.path}: pool must be a divisor of {NUM_CHANNELS}, got "
        f"{pool!r}; use one of {divisors}."
    )
  dt, end = events.window(data.path, num_steps, dt, max_time)
  features = NUM_CHANNELS // pool
  per_sample = []
  num_empty = num_spikes = num_dropped = 0
  for t, u in zip(data.times, data.units):
    steps, keep = events.bin_times(t, num_steps, dt, end)
    num_empty += t.size == 0
    num_spikes += t.size
    num_dropped += int(t.size - keep.sum())
    per_sample.append(steps[keep] * features + u[keep] // pool)
  stats = BinStats(len(data.times), num_empty, num_spikes, num_dropped)
  logging.info(
      "%s: %d samples, %d empty, %d of %d spikes past the last bin "
      "(t >= %g s) dropped.",
      data.path,
      stats.num_samples,
      stats.num_empty,
      stats.num_dropped,
      stats.num_spikes,
      end,
  )
  return events.pack(per_sample, num_steps, (features,)), stats


def load_shd(
    path: str,
    num_steps: int,
    dt: Optional[float],
    pool: int = 1,
    max_time: Optional[float] = None,
    dtype=np.float32,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads an SHD/SSC file as dense binned spike counts.

  Args:
    path: The ``.h5`` file.
    num_steps: Number of time bins ``T``.
    dt: Bin width in seconds, or ``None`` for ``max_time / num_steps``.
    pool: Adjacent channels summed into one feature; must divide 700.
    max_time: End of the window in seconds (default ``num_steps * dt``).
    dtype: Dtype of the counts (float32 by default; an integer dtype must
      hold the largest count).

  Returns:
    ``(counts, labels)``: ``(N, T, 700 // pool)`` spike counts (empty samples
    are kept, all zero) and ``(N,)`` int32 labels.

  Raises:
    ValueError: As ``read_shd`` and ``bin_shd``.
  """
  data = read_shd(path)
  binned, _ = bin_shd(data, num_steps, dt, pool, max_time)
  return events.dense(binned, dtype=dtype), data.labels


def shd_task(
    path_train: str,
    path_test: str,
    *,
    num_steps: int = 100,
    dt: Optional[float] = None,
    max_time: Optional[float] = 1.4,
    pool: int = 1,
    num_classes: Optional[int] = None,
    readout_fraction: float = 1.0,
    name: str = "shd",
) -> base.Task:
  """Builds a classification ``Task`` from an SHD or SSC train/test pair.

  Inputs are float32 spike counts ``(T, B, 700 // pool)``, binned per batch
  from the sparse events (``bin_shd``). The loss is read over the last
  ``readout_fraction`` of the steps (all steps by default), with weights
  summing to 1 per sample; see ``base.labelled_sequence_task`` for batching
  and evaluation.

  Args:
    path_train: Training file (e.g. ``shd_train.h5``).
    path_test: Test file (e.g. ``shd_test.h5``).
    num_steps: Number of time bins ``T``.
    dt: Bin width in seconds, or ``None`` for ``max_time / num_steps``.
    max_time: End of the window in seconds; SHD samples last up to about
      1.4 s. ``None`` for ``num_steps * dt``.
    pool: Adjacent channels summed into one feature; must divide 700.
    num_classes: Number of classes; by default the largest label of both
      files plus one (20 for SHD, 35 for SSC).
    readout_fraction: Fraction of the last steps that carry the loss.
    name: Task name.

  Returns:
    The ``Task``, with ``eval_batches`` over the test file.

  Raises:
    ValueError: As ``read_shd`` and ``bin_shd``, or for a bad
      ``readout_fraction`` or ``num_classes``.
  """
  splits = []
  for path in (path_train, path_test):
    data = read_shd(path)
    binned, _ = bin_shd(data, num_steps, dt, pool, max_time)
    splits.append((binned, data.labels))
  (train, train_labels), (test, test_labels) = splits
  if num_classes is None:
    num_classes = int(
        max(train_labels.max(initial=0), test_labels.max(initial=0))
    )
    num_classes += 1
  return base.labelled_sequence_task(
      name,
      train_inputs=lambda idx: events.dense(train, idx),
      train_labels=train_labels,
      test_inputs=lambda idx: events.dense(test, idx),
      test_labels=test_labels,
      num_steps=num_steps,
      input_shape=train.frame_shape,
      num_classes=num_classes,
      readout_fraction=readout_fraction,
  )
