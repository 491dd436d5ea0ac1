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
"""The parallel runners: one update built once, on every device.

:func:`make_parallel` gives the runner of ``config.parallel``: ``pmap`` over
the local devices (the batch split along a leading device axis, everything
else replicated), or ``jit`` over a ``Mesh`` of all devices of all
processes with the batch axis sharded. Both place the host train state on
the devices (``put_state``), read it back whole (``get_state``), place each
process's part of a batch (``put_batch``) and read the update's and the
evaluation's metrics. On several processes each process reads its part of
every global batch (:func:`process_part`, :func:`train_batches`,
:func:`eval_batches`) and its rows of the batch-first learner state.
"""

from typing import Optional

import chex
import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from experiments import tasks as tasks_lib
from experiments import builders
from experiments import run_spec as spec_lib
import haiku_etp

_AXIS = "batch"


def process_part() -> tuple[int, int]:
  """``(index, count)`` of this process: its ``part`` of every batch."""
  return jax.process_index(), jax.process_count()


def process_rows(batch_size: int) -> slice:
  """This process's samples of a global batch of ``batch_size``."""
  return tasks_lib.base.part_slice("training", process_part(), batch_size)


def local_learner_state(state, rows: slice):
  """The batch-first entries of a (global) learner state cut to ``rows``."""
  mask = haiku_etp.sharding.state_batch_mask(state)
  return {
      m: {n: (v[rows] if mask[m][n] else v) for n, v in entries.items()}
      for m, entries in state.items()
  }


def global_learner_state(state):
  """Every process's share of a learner state, joined (a collective).

  The batch-first entries are concatenated in process order; the shared
  ones, equal on every process, are kept once.
  """
  if jax.process_count() == 1:
    return state
  mask = haiku_etp.sharding.state_batch_mask(state)
  stacked = multihost_utils.process_allgather(state, tiled=False)
  return {
      m: {
          n: (
              np.reshape(v, (-1,) + v.shape[2:]) if mask[m][n] else v[0]
          )  # pyformat: disable
          for n, v in entries.items()
      }
      for m, entries in stacked.items()
  }


def _check_devices(n: int, runner: str) -> None:
  """Raises ``AssertionError`` unless ``n`` devices of the default backend
  exist."""
  platform = jax.default_backend()
  if platform not in ("cpu", "gpu", "tpu"):
    return  # chex knows these three kinds
  chex.assert_devices_available(
      n,
      platform,
      not_less_than=True,
      custom_message=(
          f"the {runner} runner needs {n} {platform} device(s); set "
          "config.num_devices to at most the devices there are (0: all), or "
          "start JAX with more (on CPU: XLA_FLAGS="
          f"--xla_force_host_platform_device_count={n})"
      ),
  )


def _rows(batch_size: int) -> int:
  """How many samples of a global batch this process holds."""
  return len(range(*process_rows(batch_size).indices(batch_size)))


def _check_batch(batch, num_rows: int, runner: str) -> None:
  """Raises ``AssertionError`` unless every leaf of ``batch`` is time-major
  with this process's ``num_rows`` samples on its second axis."""
  num_steps = np.shape(batch[0])[0]
  chex.assert_tree_shape_prefix(
      batch,
      (num_steps, num_rows),
      custom_message=(
          f"the {runner} runner takes this process's part of a global batch, "
          f"(steps, {num_rows} samples, ...) in every leaf; make it with "
          "task.batch(seed, config.batch_size, part=process_part())"
      ),
  )


def _first_copy(v) -> np.ndarray:
  """Device 0's copy of a replicated leaf, read without running a program."""
  if isinstance(v, jax.Array):
    return np.asarray(v.addressable_data(0)).reshape(v.shape[1:])
  return np.asarray(v)[0]


class _Pmap:
  """Local devices with ``pmap``: the batch sharded, the rest replicated."""

  name = "pmap"

  def __init__(self, config, setup: builders.Setup):
    # pmap takes the same device list on every process: all of them (None),
    # or a subset of one process's devices (num_devices is 0 on several).
    devices = None
    if config.num_devices:
      devices = jax.local_devices()[: config.num_devices]
    self.n = config.num_devices or jax.local_device_count()
    _check_devices(self.n, self.name)
    self.rows = process_rows(config.batch_size)
    self.num_rows = _rows(config.batch_size)
    self.update = jax.pmap(
        builders.make_update_fn(config, setup, _AXIS),
        axis_name=_AXIS,
        donate_argnums=0,
        devices=devices,
    )
    self.evaluate = jax.pmap(
        builders.make_eval_fn(setup, _AXIS), axis_name=_AXIS, devices=devices
    )

  def put_state(self, ts: builders.TrainState) -> builders.TrainState:
    rep = lambda t: haiku_etp.sharding.replicate(t, self.n)
    local = local_learner_state(ts.learner_state, self.rows)
    return builders.TrainState(
        rep(ts.params),
        rep(ts.opt_state),
        haiku_etp.sharding.shard_state(local, self.n),
        rep(ts.step),
        rep(ts.rng),
        rep(ts.skipped),
    )

  def get_state(self, ts: builders.TrainState) -> builders.TrainState:
    first = lambda t: jax.tree_util.tree_map(_first_copy, t)
    state = haiku_etp.sharding.unshard_state(jax.device_get(ts.learner_state))
    state = global_learner_state(state)
    return builders.TrainState(
        first(ts.params),
        first(ts.opt_state),
        state,
        first(ts.step),
        first(ts.rng),
        first(ts.skipped),
    )  # pyformat: disable

  def put_batch(self, batch) -> tuple:
    # NumPy only: the batch goes to the devices with the pmap call itself.
    batch = tuple(np.asarray(v) for v in batch)
    _check_batch(batch, self.num_rows, self.name)

    def split(v):
      v = v.reshape((v.shape[0], self.n, v.shape[1] // self.n) + v.shape[2:])
      return np.moveaxis(v, 1, 0)

    sharded = tuple(split(v) for v in batch)
    # (devices, steps, samples per device, ...): pmap maps the first axis.
    chex.assert_tree_shape_prefix(
        sharded, (self.n, batch[0].shape[0], self.num_rows // self.n)
    )
    return sharded

  def eval_metrics(self, out: dict) -> list[dict]:
    # Every device holds the means over all devices of all processes.
    return [{k: v[0] for k, v in jax.device_get(out).items()}]

  def train_metrics(self, out: dict) -> dict:
    return {k: v[0] for k, v in jax.device_get(out).items()}


def _state_spec(state, batch_spec):
  """Batch-first leaves of a learner state sharded, the rest replicated."""
  return jax.tree_util.tree_map(
      lambda batched: batch_spec if batched else P(),
      haiku_etp.sharding.state_batch_mask(state),
  )


class _Mesh:
  """All devices in one ``Mesh``; ``jit`` with the batch axis sharded."""

  name = "mesh"

  def __init__(
      self, config, setup: builders.Setup, template: builders.TrainState
  ):
    _check_devices(config.num_devices or jax.device_count(), self.name)
    devices = jax.devices()[: config.num_devices or None]
    self.batch_size = config.batch_size
    self.num_rows = _rows(config.batch_size)
    self.mesh = Mesh(np.asarray(devices), (_AXIS,))
    shard = lambda spec: NamedSharding(self.mesh, spec)
    rep = lambda t: jax.tree_util.tree_map(lambda _: shard(P()), t)
    self.state_sharding = builders.TrainState(
        rep(template.params),
        rep(template.opt_state),
        jax.tree_util.tree_map(
            shard, _state_spec(template.learner_state, P(_AXIS))
        ),
        shard(P()),
        shard(P()),
        shard(P()),
    )
    self.batch_sharding = shard(P(None, _AXIS))
    self.update = jax.jit(
        builders.make_update_fn(config, setup, None),
        in_shardings=(self.state_sharding, self.batch_sharding),
        out_shardings=(self.state_sharding, shard(P())),
        donate_argnums=0,
    )
    self.evaluate = jax.jit(
        builders.make_eval_fn(setup), out_shardings=shard(P())
    )

  def put_state(self, ts: builders.TrainState) -> builders.TrainState:
    # Every process holds the whole host state; each places its shards.
    def put(v, sharding):
      v = np.asarray(v)
      return jax.make_array_from_callback(v.shape, sharding, lambda i: v[i])

    return jax.tree_util.tree_map(put, ts, self.state_sharding)

  def get_state(self, ts: builders.TrainState) -> builders.TrainState:
    if jax.process_count() > 1:
      return multihost_utils.process_allgather(ts, tiled=True)
    return jax.tree_util.tree_map(np.asarray, jax.device_get(ts))

  def put_batch(self, batch) -> tuple:
    _check_batch(batch, self.num_rows, self.name)
    sharded = tuple(
        jax.make_array_from_process_local_data(self.batch_sharding, v)
        for v in batch
    )
    # (steps, the global batch, ...), its second axis split over the mesh.
    chex.assert_tree_shape_prefix(
        sharded, (np.shape(batch[0])[0], self.batch_size)
    )
    return sharded

  def eval_metrics(self, out: dict) -> list[dict]:
    return [jax.device_get(out)]

  def train_metrics(self, out: dict) -> dict:
    return jax.device_get(out)


def make_parallel(config, setup: builders.Setup, template: builders.TrainState):
  """The ``pmap`` or ``mesh`` runner of ``config.parallel``."""
  config = spec_lib.run_spec(config)
  if config.parallel == "pmap":
    return _Pmap(config, setup)
  return _Mesh(config, setup, template)


def train_batches(task, config, start: int):
  """This process's part of the batches of steps ``start, start + 1, ...``."""
  for step in range(start, config.train_steps):
    seed = tasks_lib.train_seed(config.seed, step)
    yield tuple(task.batch(seed, config.batch_size, part=process_part()))


def eval_batches(task, config):
  """This process's part of the held-out batches (the same every time)."""
  if task.eval_batches is not None:
    yield from map(
        tuple, task.eval_batches(config.batch_size, part=process_part())
    )
    return
  for i in range(config.eval_batches):
    seed = tasks_lib.eval_seed(config.seed, i)
    yield tuple(task.batch(seed, config.batch_size, part=process_part()))
