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
"""Data parallelism for learners: shard the batch, replicate the rest.

Traces are per sample, so sharding the batch across devices and averaging the
gradients (``axis_name=`` on the learner's gradient functions) reproduces the
single-device gradient of a batch-mean loss exactly.

>>> import jax, jax.numpy as jnp
>>> shard_batch({"x": jnp.zeros((8, 3))}, 4)["x"].shape
(4, 2, 3)
"""

import numbers
from typing import Any

import jax
from jax import tree_util
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.core import checks
from haiku_etp._src.core import state_layout
from haiku_etp._src.core import state as state_lib

# shard_state marks the state it shards with one entry holding the device
# index (a scalar per device under pmap); unshard_state requires it, so an
# unsharded state is never silently reshaped.
SHARDS_KEY = state_layout.SHARDS_KEY


def _np(v: Any):
  """NumPy (host) for concrete arrays, ``jnp`` under a trace.

  Sharding and replication are layout changes made on the host before a
  ``pmap``; NumPy keeps them from compiling one small program per shape.
  """
  return jnp if isinstance(v, jax.core.Tracer) else np


def _check_count(num_devices: Any) -> int:
  if (
      isinstance(num_devices, bool)
      or not isinstance(num_devices, numbers.Integral)
      or num_devices < 1
  ):
    raise ValueError(
        f"num_devices must be an int >= 1, got {num_devices!r}; "
        "jax.local_device_count() gives the number of local devices."
    )
  return int(num_devices)


def shard_batch(tree: Any, num_devices: int, axis: int = 0) -> Any:
  """Splits axis ``axis`` (the batch) of every leaf into ``num_devices``.

  The device axis is put first: ``(..., B, ...) -> (n, ..., B / n, ...)``.
  Time-major sequences ``(T, B, ...)`` use ``axis=1``.

  Raises:
    ValueError: for a bad ``num_devices`` or a leaf whose batch axis is
      missing or not divisible by ``num_devices``.
  """
  num_devices = _check_count(num_devices)

  def split(path: tuple, v: Any):
    xp = _np(v)
    v = xp.asarray(v)
    if v.ndim <= axis or v.shape[axis] % num_devices:
      where = tree_util.keystr(path) or "the input"
      raise ValueError(
          f"Cannot shard axis {axis} of {where} with shape {v.shape} over "
          f"{num_devices} devices: the axis "
          "must exist and its size be divisible by the device count (pick a "
          "batch size that is a multiple of it)."
      )
    shape = v.shape[:axis] + (num_devices, v.shape[axis] // num_devices)
    v = v.reshape(shape + v.shape[axis + 1 :])
    return xp.moveaxis(v, axis, 0)

  return tree_util.tree_map_with_path(split, tree)


def unshard_batch(tree: Any, axis: int = 0) -> Any:
  """Inverse of :func:`shard_batch`.

  Raises:
    ValueError: for a leaf without the device axis and the batch axis.
  """

  def merge(path: tuple, v: Any):
    xp = _np(v)
    v = xp.asarray(v)
    if v.ndim < axis + 2:
      raise ValueError(
          f"{tree_util.keystr(path) or 'The input'} has shape "
          f"{jnp.shape(v)}: it lacks the leading device axis and batch axis "
          "that shard_batch (or a pmap output) gives it."
      )
    v = xp.moveaxis(v, 0, axis)
    return v.reshape(v.shape[:axis] + (-1,) + v.shape[axis + 2 :])

  return tree_util.tree_map_with_path(merge, tree)


def replicate(tree: Any, num_devices: int) -> Any:
  """Stacks ``num_devices`` copies of every leaf on a new leading axis.

  Raises:
    ValueError: for ``num_devices`` below 1.
  """
  num_devices = _check_count(num_devices)

  def copies(v: Any):
    xp = _np(v)
    v = xp.asarray(v)
    return xp.broadcast_to(v, (num_devices,) + v.shape)

  return tree_util.tree_map(copies, tree)


def _batched(module: str, name: str, leaf_shape) -> bool:
  """Whether a state entry carries the batch.

  Hidden state, declared per-sample state (``get_sample_state``) and the
  learner's non-scalar entries (traces, initial state) are batch first;
  the learner's shared entries (a feedback matrix) and other ordinary state
  are shared and replicated.
  """
  if state_lib.is_learner_module(module):
    return len(leaf_shape) >= 1 and not state_layout.is_shared(name)
  return state_lib.is_hidden_name(name) or state_lib.is_sample_name(name)


def state_batch_mask(state: Any) -> dict:
  """Which entries of a learner state carry the batch on their first axis.

  The rule :func:`shard_state` shards by: hidden state, per-sample state and
  the learner's non-scalar entries (traces, initial state) are batch first;
  everything else (the learner's ``shared:`` entries too) is shared. Use it to split a state across processes or to
  give it a ``PartitionSpec`` per entry.

  Args:
    state: a learner state (``learner.init_state``), unsharded.

  Returns:
    A dict of the same structure with a ``bool`` per entry.

  Raises:
    ValueError: for a state that :func:`shard_state` already sharded.
  """
  if hasattr(state, "get") and SHARDS_KEY in state:
    raise ValueError(
        "state_batch_mask takes an unsharded state; unshard it first with "
        "haiku_etp.sharding.unshard_state."
    )
  return {
      m: {n: _batched(m, n, jnp.shape(v)) for n, v in entries.items()}
      for m, entries in state.items()
  }


def shard_state(state: Any, num_devices: int) -> dict:
  """Shards a learner state for ``pmap``.

  Hidden state, per-sample state and traces are split over the devices
  along the batch; scalar learner entries and other ordinary state are
  replicated. The result is marked, so :func:`unshard_state` can tell it
  from an unsharded state.

  Raises:
    ValueError: for a bad ``num_devices``, an already sharded state, or a
      batch that does not divide.
  """
  num_devices = _check_count(num_devices)
  if SHARDS_KEY in state:
    raise ValueError("The state is already sharded (it has a device axis).")
  out = {}
  for m, entries in state.items():
    out[m] = {
        n: shard_batch({f"{m}/{n}": v}, num_devices)[f"{m}/{n}"]
        if _batched(m, n, jnp.shape(v))
        else replicate(v, num_devices)
        for n, v in entries.items()
    }
  out[SHARDS_KEY] = {"index": np.arange(num_devices, dtype=np.int32)}
  return out


def unshard_state(state: Any) -> dict:
  """Inverse of :func:`shard_state` (replicated leaves from device 0).

  Takes the output of :func:`shard_state` or of a ``pmap`` that carried it.

  Raises:
    ValueError: for a state that :func:`shard_state` did not shard.
  """
  marker = None
  if hasattr(state, "get"):
    marker = state.get(SHARDS_KEY, {}).get("index")
  if marker is None or jnp.ndim(marker) != 1:
    raise ValueError(
        "unshard_state takes a state sharded by haiku_etp.sharding.shard_state (or "
        "returned by a pmap that carried one); this state has no device "
        "axis. An unsharded state needs no unsharding."
    )
  num_devices = jnp.shape(marker)[0]
  out: dict = {}
  for m, entries in state.items():
    if m == SHARDS_KEY:
      continue
    out[m] = {}
    for n, v in entries.items():
      checks.assert_tree_shape_prefix(
          v,
          (num_devices,),
          custom_message=(
              f"state[{m!r}][{n!r}] has shape {jnp.shape(v)}, without the "
              f"leading axis of {num_devices} devices that shard_state gives."
          ),
      )
      out[m][n] = (
          unshard_batch(v)
          if _batched(m, n, jnp.shape(v)[1:])
          else _np(v).asarray(v)[0]
      )
  return out
