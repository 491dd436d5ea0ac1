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

from typing import Any

from jax import tree_util
import jax.numpy as jnp

from haiku_etp._src import state as state_lib


def shard_batch(tree: Any, num_devices: int, axis: int = 0) -> Any:
  """Splits axis ``axis`` (the batch) of every leaf into ``num_devices``.

  The device axis is put first: ``(..., B, ...) -> (n, ..., B / n, ...)``.

  Raises:
    ValueError: if a leaf's batch is not divisible by ``num_devices``.
  """

  def split(v):
    v = jnp.asarray(v)
    if v.ndim <= axis or v.shape[axis] % num_devices:
      raise ValueError(
          f"Cannot shard axis {axis} of shape {v.shape} over {num_devices} "
          "devices: it must exist and be divisible by the device count."
      )
    shape = v.shape[:axis] + (num_devices, v.shape[axis] // num_devices)
    v = v.reshape(shape + v.shape[axis + 1 :])
    return jnp.moveaxis(v, axis, 0)

  return tree_util.tree_map(split, tree)


def unshard_batch(tree: Any, axis: int = 0) -> Any:
  """Inverse of :func:`shard_batch`."""

  def merge(v):
    v = jnp.moveaxis(v, 0, axis)
    return v.reshape(v.shape[:axis] + (-1,) + v.shape[axis + 2 :])

  return tree_util.tree_map(merge, tree)


def replicate(tree: Any, num_devices: int) -> Any:
  """Stacks ``num_devices`` copies of every leaf on a new leading axis."""
  return tree_util.tree_map(
      lambda v: jnp.broadcast_to(v, (num_devices,) + jnp.shape(v)), tree
  )


def _batched(module: str, entries: dict, leaf_shape) -> set:
  """Names of the entries of one state module that carry the batch.

  Traces (non-scalar learner entries) and hidden state are batch first.
  Ordinary state of the same shape as a hidden entry of its module is
  per-sample too (a neuron's refractory counter); other ordinary state is
  shared and replicated.
  """
  if state_lib.is_learner_module(module):
    return {n for n, v in entries.items() if len(leaf_shape(v)) >= 1}
  hidden = {n for n in entries if state_lib.is_hidden_name(n)}
  shapes = {leaf_shape(entries[n]) for n in hidden}
  return hidden | {n for n, v in entries.items() if leaf_shape(v) in shapes}


def shard_state(state: Any, num_devices: int) -> dict:
  """Shards a learner state for ``pmap``.

  Hidden state, traces and per-sample ordinary state (batch first) are split
  over devices; scalar learner entries and other ordinary state are
  replicated.
  """
  out = {}
  for m, entries in state.items():
    batched = _batched(m, entries, jnp.shape)
    out[m] = {
        n: shard_batch(v, num_devices)
        if n in batched
        else replicate(v, num_devices)
        for n, v in entries.items()
    }
  return out


def unshard_state(state: Any) -> dict:
  """Inverse of :func:`shard_state` (replicated leaves from device 0)."""
  out = {}
  for m, entries in state.items():
    batched = _batched(m, entries, lambda v: jnp.shape(v)[1:])
    out[m] = {
        n: unshard_batch(v) if n in batched else v[0]
        for n, v in entries.items()
    }
  return out
