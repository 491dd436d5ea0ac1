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
"""Time binning of event streams, kept sparse until a batch needs it.

Binning rule, shared by the SHD and N-MNIST loaders: with bin edges
``edges = np.arange(num_steps + 1) * dt`` in float64, an event at time ``t``
goes to step ``k`` when ``edges[k] <= t < edges[k + 1]``, the half-open
convention of ``np.histogram`` except at the last edge. The window is
``[0, end)`` with ``end = num_steps * dt``, or ``max_time`` when given (then
``dt`` may be omitted and defaults to ``max_time / num_steps``); events at or
after ``end`` are dropped and counted, never clipped into the last bin.

``BinnedEvents`` stores the kept events of ``N`` samples as flat indices
``step * F + feature`` (``F`` the size of one frame) with per-sample offsets,
four bytes per event; ``dense`` turns any subset into count frames.
"""

import math
from typing import NamedTuple, Optional, Sequence

import numpy as np

# Samples densified per np.bincount call, to bound its int64 buffer.
_CHUNK = 256


def _positive_real(fn, name, value):
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, float, np.integer, np.floating)
  ):
    raise TypeError(
        f"{fn}: {name} must be a positive number, got {value!r} of type "
        f"{type(value).__name__}."
    )
  value = float(value)
  if not (math.isfinite(value) and value > 0):
    raise ValueError(f"{fn}: {name} must be positive and finite, got {value}.")
  return value


def check_steps(fn: str, num_steps) -> int:
  """Validates a number of time steps.

  Args:
    fn: Caller's name, for the message.
    num_steps: Must be an integer >= 1.

  Returns:
    ``num_steps`` as an int.

  Raises:
    TypeError: If it is not an integer.
    ValueError: If it is below 1.
  """
  if isinstance(num_steps, (bool, np.bool_)) or not isinstance(
      num_steps, (int, np.integer)
  ):
    raise TypeError(
        f"{fn}: num_steps must be an integer >= 1, got {num_steps!r} of type "
        f"{type(num_steps).__name__}."
    )
  if num_steps < 1:
    raise ValueError(f"{fn}: num_steps must be >= 1, got {num_steps}.")
  return int(num_steps)


def window(
    fn: str,
    num_steps: int,
    dt: Optional[float],
    max_time: Optional[float],
    unit: str = "",
) -> tuple[float, float]:
  """Resolves the bin width and the end of the window.

  Args:
    fn: Caller's name, for the messages.
    num_steps: Number of bins.
    dt: Bin width, or ``None`` to use ``max_time / num_steps``.
    max_time: End of the window, or ``None`` for ``num_steps * dt``; at most
      ``num_steps * dt``.
    unit: Suffix of the argument names in messages (e.g. ``"_us"``).

  Returns:
    ``(dt, end)``, with ``end <= num_steps * dt`` exactly.

  Raises:
    ValueError: If both are ``None``, one is not positive, or ``max_time``
      exceeds ``num_steps * dt``.
  """
  num_steps = check_steps(fn, num_steps)
  if dt is None and max_time is None:
    raise ValueError(
        f"{fn}: give dt{unit} (bin width) or max_time{unit} (window length); "
        "both are None."
    )
  if max_time is not None:
    max_time = _positive_real(fn, f"max_time{unit}", max_time)
  if dt is None:
    dt = max_time / num_steps
  else:
    dt = _positive_real(fn, f"dt{unit}", dt)
  span = float(np.float64(num_steps) * dt)
  if max_time is None:
    return dt, span
  if max_time > span * (1 + 1e-12):
    raise ValueError(
        f"{fn}: max_time{unit}={max_time} exceeds num_steps * dt{unit} = "
        f"{num_steps} * {dt} = {span}; events past the last bin would be "
        f"lost anyway. Lower max_time{unit} or raise num_steps or dt{unit}."
    )
  return dt, min(max_time, span)


def bin_times(
    times: np.ndarray, num_steps: int, dt: float, end: float
) -> tuple[np.ndarray, np.ndarray]:
  """Returns the step of every event and whether it lies in the window.

  Args:
    times: Event times (any real dtype; cast to float64 first), >= 0.
    num_steps: Number of bins.
    dt: Bin width, in the unit of ``times``.
    end: End of the window, ``<= num_steps * dt``.

  Returns:
    ``(steps, keep)``: int64 steps (meaningful where ``keep``), and the bool
    mask of events with ``t < end``.
  """
  times = np.asarray(times).astype(np.float64)
  edges = np.arange(num_steps + 1, dtype=np.float64) * dt
  steps = np.searchsorted(edges, times, side="right") - 1
  keep = times < end
  return steps, keep


class BinnedEvents(NamedTuple):
  """The in-window events of ``N`` samples, binned, in a sparse layout.

  Attributes:
    flat: ``(E,)`` int32 (int64 if a sample has ``2**31`` cells or more)
      flat indices ``step * prod(frame_shape) + feature``, sample after
      sample.
    offsets: ``(N + 1,)`` int64; sample ``i`` owns ``flat[offsets[i] :
      offsets[i + 1]]``.
    num_steps: Steps per sample.
    frame_shape: Shape of one step's counts.
  """

  flat: np.ndarray
  offsets: np.ndarray
  num_steps: int
  frame_shape: tuple[int, ...]

  @property
  def num_samples(self) -> int:
    return self.offsets.shape[0] - 1


def flat_dtype(num_steps: int, frame_size: int) -> np.dtype:
  """Returns the smallest of int32 and int64 that indexes a whole sample."""
  return np.dtype(np.int32 if num_steps * frame_size < 2**31 else np.int64)


def pack(
    per_sample: Sequence[np.ndarray],
    num_steps: int,
    frame_shape: tuple[int, ...],
) -> BinnedEvents:
  """Builds ``BinnedEvents`` from per-sample flat index arrays.

  Args:
    per_sample: One array of flat indices per sample.
    num_steps: Steps per sample.
    frame_shape: Shape of one step's counts.

  Returns:
    The ``BinnedEvents``.
  """
  frame_shape = tuple(int(d) for d in frame_shape)
  dtype = flat_dtype(num_steps, math.prod(frame_shape))
  lengths = np.array([a.shape[0] for a in per_sample], np.int64)
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  if per_sample:
    flat = np.concatenate([np.asarray(a, dtype) for a in per_sample])
  else:
    flat = np.zeros((0,), dtype)
  return BinnedEvents(flat, offsets, num_steps, frame_shape)


def dense(
    binned: BinnedEvents,
    indices: Optional[np.ndarray] = None,
    dtype=np.float32,
) -> np.ndarray:
  """Returns the event counts of some samples as dense frames.

  Args:
    binned: The binned events.
    indices: Sample indices in ``[0, N)``, any order, repeats allowed; all
      samples when ``None``.
    dtype: Output dtype; an integer dtype must hold the largest count.

  Returns:
    ``(len(indices), num_steps, *frame_shape)`` counts of ``dtype``.

  Raises:
    ValueError: If an index is out of range or a count overflows ``dtype``.
  """
  n_all = binned.num_samples
  if indices is None:
    indices = np.arange(n_all)
  indices = np.asarray(indices, np.int64).reshape(-1)
  if indices.size and (indices.min() < 0 or indices.max() >= n_all):
    raise ValueError(
        f"dense: sample indices must be in [0, {n_all}), got "
        f"[{indices.min()}, {indices.max()}]."
    )
  dtype = np.dtype(dtype)
  cells = binned.num_steps * math.prod(binned.frame_shape)
  out = np.zeros((indices.size, cells), dtype)
  for lo in range(0, indices.size, _CHUNK):
    chunk = indices[lo : lo + _CHUNK]
    starts = binned.offsets[chunk]
    lengths = binned.offsets[chunk + 1] - starts
    total = int(lengths.sum())
    if total == 0:
      continue
    owner = np.repeat(np.arange(chunk.size), lengths)
    first = np.cumsum(lengths) - lengths
    position = np.arange(total) - first[owner] + starts[owner]
    cell = binned.flat[position].astype(np.int64) + owner * cells
    counts = np.bincount(cell, minlength=chunk.size * cells)
    if dtype.kind in "ui" and counts.max() > np.iinfo(dtype).max:
      raise ValueError(
          f"dense: a bin holds {counts.max()} events, more than {dtype} can "
          "hold; use dtype=np.float32 or a wider integer type."
      )
    out[lo : lo + chunk.size] = counts.reshape(chunk.size, cells)
  return out.reshape((indices.size, binned.num_steps) + binned.frame_shape)
