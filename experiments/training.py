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
"""Online training of a haiku_etp model on a task, on every device.

``train(config, workdir)`` is the whole pipeline: it validates the config,
builds the task, model, learner and optimizer, restores the newest
checkpoint of ``workdir`` if there is one, and runs the update built once
(``pmap`` over the devices, or ``jit`` over a ``Mesh`` of all devices with
the batch axis sharded), with batches produced ahead of the step, absl
logs and ``metrics.jsonl`` records every ``log_every`` steps, evaluation on
held-out batches every ``eval_every`` steps and at the end, and orbax
checkpoints every ``checkpoint_every`` steps. Plots are drawn at the end
when matplotlib is installed.

Config fields: ``task`` (``name`` plus the task's keyword hyperparameters),
``model`` (see :mod:`experiments.models`), ``learner`` (a registered name:
``haiku_etp.learner_names()``; its options come from the config fields of
their names, ``form`` from ``es_form`` and ``params`` from
``rtrl_params``), ``decay`` and ``es_form`` (ES-D-RTRL: ``window`` or
``fused``), ``max_trace_bytes`` and ``rtrl_params`` (RTRL's budget and the
parameters it keeps the full influence of; empty: all), ``trace_dtype``
(the online learners' trace storage, ``bfloat16`` or ``float16``; empty:
the parameters' dtype), ``window`` (online learners and ``tbptt``;
0 picks it, :func:`learner_window`), ``update_every`` (apply the optimizer every
that many steps inside a sequence, or a stream task's chunk, which it must
not exceed; 0: once per sequence or chunk), ``optimizer``,
``learning_rate``, ``batch_size`` (global), ``train_steps``, ``eval_every``,
``eval_batches``, ``log_every``, ``checkpoint_every``, ``keep_checkpoints``,
``seed``, ``parallel`` (``pmap`` or ``mesh``), ``num_devices`` (0: all),
``on_nonfinite`` (``stop``: a NaN or infinite loss or gradient norm stops
the run, naming the step and the last good checkpoint; ``skip``: that
update is dropped and counted).

The work directory may be relative; it is made absolute once. A resumed
run checks its config against the checkpoint's: a changed field that shapes
the train state is a :class:`ConfigError` naming it, other changes are
logged. A damaged newest checkpoint is set aside and the previous one used
(``experiments.checkpoints``). A finished run reports its result again
without training or appending records; ``wall_time`` continues across
resumes.

On several processes (after ``jax.distributed.initialize``, see
``experiments/train.py``) the same call runs in each: every process reads
its part of each global batch, the host train state and the checkpoints
hold the whole run's state, and process 0 alone writes metrics and plots.
"""

import json
import os
import time
from typing import Any, Callable, NamedTuple, Optional
import warnings

from absl import logging
import haiku as hk
import jax
from jax import lax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax

from experiments import checkpoints as checkpoints_lib
from experiments import metrics as metrics_lib
from experiments import models
from experiments import tasks as tasks_lib
from experiments.tasks import prefetch as prefetch_lib
import haiku_etp

ES_FORMS = ("window", "fused")
# Learner options whose config field has another name; every other option
# is read from the config field of its own name when the config has one.
_OPTION_FIELDS = {"form": "es_form", "params": "rtrl_params", "n": "snap_n"}
PARALLEL = ("pmap", "mesh")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
ON_NONFINITE = ("stop", "skip")
_AXIS = "batch"
# Config fields that say how long and how visibly a run goes; a resumed run
# may change them without a word beyond the log.
_RUN_LENGTH_FIELDS = (
    "train_steps",
    "log_every",
    "eval_every",
    "eval_batches",
    "checkpoint_every",
    "keep_checkpoints",
    "parallel",
    "num_devices",
    "on_nonfinite",
)


class ConfigError(ValueError):
  """A config or work directory that the run cannot use."""


class Diverged(FloatingPointError):
  """A training loss or gradient norm was not finite (``on_nonfinite="stop"``)."""


class TrainState(NamedTuple):
  """Everything a run carries from one update to the next.

  Attributes:
    params: the model's parameters.
    opt_state: the optimizer's state.
    learner_state: the learner state (model state and traces) that each
      sequence starts from after ``learner.reset``.
    step: the number of updates done (an int32 scalar).
    rng: the run's key, split once per update.
    skipped: the updates dropped for a non-finite loss or gradient
      (``config.on_nonfinite="skip"``; an int32 scalar).
  """

  params: Any
  opt_state: Any
  learner_state: Any
  step: jax.Array
  rng: jax.Array
  skipped: jax.Array


def _positive_int(config, name: str, minimum: int = 1) -> int:
  value = config[name]
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ConfigError(
        f"config.{name} must be an int >= {minimum}, got {value!r}."
    )
  return value


def device_count(config) -> int:
  """The devices a run uses: ``config.num_devices``, or all (0)."""
  return config.num_devices or jax.device_count()


def validate(config) -> None:
  """Raises :class:`ConfigError` (a ``ValueError``) for a bad config, before
  anything is compiled."""
  if config.learner not in haiku_etp.learner_names():
    raise ConfigError(
        f"config.learner must be one of {haiku_etp.learner_names()}, got "
        f"{config.learner!r}."
    )
  if config.parallel not in PARALLEL:
    raise ConfigError(
        f"config.parallel must be one of {PARALLEL}, got {config.parallel!r}."
    )
  es_form = config.get("es_form", "window")
  if es_form not in ES_FORMS:
    raise ConfigError(
        f"config.es_form must be one of {ES_FORMS}, got {es_form!r}."
    )
  if (
      "form" in haiku_etp.learner_spec(config.learner).options
      and es_form == "fused"
      and config.window not in (0, 1)
  ):
    raise ConfigError(
        f"config.es_form='fused' computes the gradient step by step, so "
        f"config.window must be 1, got {config.window}; use "
        "config.es_form='window' for longer windows."
    )
  on_nonfinite = config.get("on_nonfinite", "stop")
  if on_nonfinite not in ON_NONFINITE:
    raise ConfigError(
        f"config.on_nonfinite must be one of {ON_NONFINITE}, got "
        f"{on_nonfinite!r}."
    )
  if config.optimizer not in OPTIMIZERS:
    raise ConfigError(
        f"config.optimizer must be one of {OPTIMIZERS}, got "
        f"{config.optimizer!r}."
    )
  if config.task.name not in tasks_lib.TASKS:
    raise ConfigError(
        f"config.task.name must be one of "
        f"{tasks_lib.TASKS}, got {config.task.name!r}."
    )
  for name in (
      "batch_size",
      "log_every",
      "eval_every",
      "checkpoint_every",
      "keep_checkpoints",
      "eval_batches",
  ):
    _positive_int(config, name)  # pyformat: disable
  for name in ("window", "train_steps", "update_every", "seed", "num_devices"):
    _positive_int(config, name, minimum=0)
  if jax.process_count() > 1 and config.num_devices:
    raise ConfigError(
        f"config.num_devices is {config.num_devices} but a run on "
        f"{jax.process_count()} processes uses every device of every "
        "process; set config.num_devices=0."
    )
  if config.num_devices > jax.device_count():
    raise ConfigError(
        f"config.num_devices is {config.num_devices} but only "
        f"{jax.device_count()} devices exist; use 0 for all of them."
    )
  num_devices = device_count(config)
  if config.batch_size % num_devices:
    raise ConfigError(
        f"config.batch_size {config.batch_size} is not divisible by the "
        f"{num_devices} devices; use a multiple of {num_devices}."
    )
  if not config.learning_rate > 0:
    raise ConfigError(
        f"config.learning_rate must be > 0, got {config.learning_rate!r}."
    )
  if (
      config.learner == "tbptt"  # BPTT within windows: no traces
      and config.update_every
      and config.window > config.update_every
  ):
    logging.warning(
        "config.window=%d is longer than config.update_every=%d: %s keeps "
        "no state across an optimizer update, so its window is in effect %d "
        "steps.",
        config.window,
        config.update_every,
        config.learner,
        config.update_every,
    )  # pyformat: disable


def option_field(option: str) -> str:
  """The config field that holds learner option ``option``."""
  return _OPTION_FIELDS.get(option, option)


def learner_options(config) -> dict:
  """The registered learner's options that ``config`` sets.

  A field that is absent, ``None`` or empty leaves the learner's default.
  """
  if isinstance(config, RunSpec):
    return dict(config.learner_options)
  options = {}
  for option in haiku_etp.learner_spec(config.learner).options:
    field = option_field(option)
    value = config.get(field)
    if value is None or (isinstance(value, (tuple, list, str)) and not value):
      continue
    if option == "remat" and isinstance(value, str) and value.isdigit():
      value = int(value)
    if option == "window":  # tbptt's truncation: 0 picks it
      value = _window(config)
    options[option] = tuple(value) if isinstance(value, list) else value
  return options


class RunSpec(NamedTuple):
  """A config validated once: the typed description of a run.

  :func:`run_spec` builds it from an ``ml_collections`` config; the
  pipeline's functions (``build``, ``make_update_fn``, the runners, the
  batch streams, ``train``) read it instead of the raw config, and accept a
  config too, which they validate into one.

  Attributes:
    task_name: the registered task (``experiments.tasks.get_task``).
    task_options: its hyperparameters.
    model: the ``model`` block, as a dict.
    learner: the registered learner.
    learner_options: the options the config sets for it.
    window: ``sequence_grad``'s window (``None``: the whole sequence).
    update_every: optimizer steps every this many steps (0: per sequence).
    optimizer, learning_rate, clip_norm: the optimizer.
    batch_size, train_steps, eval_every, eval_batches, log_every,
      checkpoint_every, keep_checkpoints, seed: the run's schedule.
    on_nonfinite: ``"stop"`` or ``"skip"``.
    parallel: ``"pmap"`` or ``"mesh"``.
    num_devices: devices asked for (0: all).
    config: the config it came from (the checkpoints' record of the run).
  """

  task_name: str
  task_options: dict
  model: dict
  learner: str
  learner_options: dict
  window: Optional[int]
  update_every: int
  optimizer: str
  learning_rate: float
  clip_norm: float
  batch_size: int
  train_steps: int
  eval_every: int
  eval_batches: int
  log_every: int
  checkpoint_every: int
  keep_checkpoints: int
  seed: int
  on_nonfinite: str
  parallel: str
  num_devices: int
  config: Any


def run_spec(config, *, check: bool = True) -> RunSpec:
  """``config`` validated (:func:`validate`) into a :class:`RunSpec`; a
  ``RunSpec`` is returned as it is. ``check=False`` skips the checks that
  depend on this machine (a saved config read back for its shapes).

  Raises:
    ConfigError: for a bad config.
  """
  if isinstance(config, RunSpec):
    return config
  if check:
    validate(config)
  whole = haiku_etp.learner_spec(config.learner).whole_sequence
  return RunSpec(
      task_name=config.task.name,
      task_options={k: v for k, v in config.task.items() if k != "name"},
      model=dict(config.model),
      learner=config.learner,
      learner_options=learner_options(config),
      window=None if whole else _window(config),
      update_every=config.update_every,
      optimizer=config.optimizer,
      learning_rate=config.learning_rate,
      clip_norm=config.get("clip_norm", 0.0) or 0.0,
      batch_size=config.batch_size,
      train_steps=config.train_steps,
      eval_every=config.eval_every,
      eval_batches=config.eval_batches,
      log_every=config.log_every,
      checkpoint_every=config.checkpoint_every,
      keep_checkpoints=config.keep_checkpoints,
      seed=config.seed,
      on_nonfinite=config.get("on_nonfinite", "stop"),
      parallel=config.parallel,
      num_devices=config.num_devices,
      config=config,
  )


def make_task(config) -> tasks_lib.Task:
  """The task of ``config`` (one registry: ``tasks.get_task``)."""
  spec = run_spec(config, check=False)
  return tasks_lib.get_task(spec.task_name, **spec.task_options)


def make_learner(config, model) -> haiku_etp.Learner:
  """The registered learner ``config.learner`` on ``model``, with the
  options the config sets (:func:`learner_options`)."""
  spec = run_spec(config, check=False)
  options = spec.learner_options
  try:
    return haiku_etp.make_learner(spec.learner, model, **options)
  except (TypeError, ValueError) as e:
    fields = ", ".join(
        f"config.{option_field(k)}={v!r}" for k, v in options.items()
    )
    raise ConfigError(
        f"config.learner={spec.learner!r} with {fields or 'no options'}: "
        f"{e}"
    ) from None


def make_optimizer(config) -> optax.GradientTransformation:
  spec = run_spec(config, check=False)
  make = dict(
      adam=optax.adam, adamw=optax.adamw, sgd=optax.sgd, rmsprop=optax.rmsprop
  )[spec.optimizer]
  opt = make(spec.learning_rate)
  if spec.clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(spec.clip_norm), opt)
  return opt


# The window that config.window = 0 gives the online learners.
AUTO_WINDOW = 32


def _window(config) -> int:
  """``config.window``, or with 0 the window picked for the learner: 1 for a
  fused form (step by step), :data:`AUTO_WINDOW` for the others (``tbptt``
  truncates there)."""
  if config.window:
    return config.window
  if config.get("es_form", "window") == "fused" and (
      "form" in haiku_etp.learner_spec(config.learner).options
  ):
    return 1
  return AUTO_WINDOW


def learner_window(config) -> Optional[int]:
  """The ``sequence_grad`` window: the whole sequence for a learner that
  covers it (BPTT), else ``config.window``; ``config.window = 0`` picks
  :data:`AUTO_WINDOW` steps for the online learners and ``tbptt`` (1 for a
  fused form).

  How it is picked: inside a window the gradient is BPTT's over its steps
  (exact through everything), and the traces cross it once, in closed form
  where the learner has it (``report()`` says), so a longer window spends
  less on the traces per step; its memory is that of BPTT over the window's
  steps plus their records, flat in the sequence length. 32 steps keep that
  memory small while the traces' share of the time is within a few percent
  of longer windows on the reference models (``experiments.benchmark
  --bench_windows``). A sequence cut by ``update_every`` into shorter pieces
  takes windows of the piece's length; a stream keeps its traces across
  pieces.
  """
  return run_spec(config, check=False).window


class Setup(NamedTuple):
  """The pieces of a run that the config determines."""

  task: tasks_lib.Task
  model: hk.TransformedWithState
  learner: haiku_etp.Learner
  optimizer: optax.GradientTransformation


def build(config) -> Setup:
  """The task, model, learner and optimizer of ``config``.

  Raises:
    ConfigError: for a field the task, model or learner rejects (their
      ``ValueError``, which names the field), or ``update_every`` longer
      than a stream task's chunk.
  """
  try:
    spec = run_spec(config, check=False)
    task = make_task(spec)
    _check_update_every(spec, task)
    model = models.make_model(spec.model, task.output_size)
    return Setup(task, model, make_learner(spec, model), make_optimizer(spec))
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(str(e)) from e


def _check_update_every(spec: RunSpec, task: tasks_lib.Task) -> None:
  """Raises :class:`ConfigError` for ``update_every`` longer than a stream
  task's chunk: each training batch is one chunk and the learner takes its
  optimizer steps inside it, so the run would step once per chunk."""
  if not task.stream or spec.update_every <= task.num_steps:
    return
  raise ConfigError(
      f"config.update_every={spec.update_every} is longer than a training "
      f"batch of the stream task {task.name!r} "
      f"(config.task.chunk={task.num_steps} steps): the optimizer steps "
      "inside each batch, so it would step once per chunk, as with "
      f"update_every={task.num_steps}. Set config.update_every <= "
      f"{task.num_steps} (0: once per chunk), or raise config.task.chunk to "
      "at least config.update_every."
  )


def _init_fn(config, setup: Setup, batch_size: int):
  """``init(rng) -> TrainState``, jittable, for a global ``batch_size``."""
  x0 = jax.ShapeDtypeStruct(
      (batch_size,) + tuple(setup.task.input_shape), jnp.float32
  )

  def init(rng):
    init_rng, rng = jax.random.split(rng)
    params, state = setup.learner.init(init_rng, jnp.zeros(x0.shape, x0.dtype))
    zero = jnp.zeros((), jnp.int32)
    return TrainState(
        params, setup.optimizer.init(params), state, zero, rng, zero
    )

  return init


def init_train_state(config, setup: Setup, batch_size: int) -> TrainState:
  """The initial train state (host arrays) for a global ``batch_size``."""
  with warnings.catch_warnings():
    # The learner announces its approximations when the update compiles.
    warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
    ts = jax.jit(_init_fn(config, setup, batch_size))(
        jax.random.PRNGKey(config.seed)
    )
  return jax.tree_util.tree_map(np.asarray, ts)


def abstract_train_state(config) -> TrainState:
  """The shapes and dtypes of the train state that ``config`` builds."""
  setup = build(config)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
    return jax.eval_shape(
        _init_fn(config, setup, config.batch_size),
        jax.random.PRNGKey(config.seed),
    )


def _loss_with_outputs(task):
  return lambda out, y: (task.loss(out, y), out)


def _apply_in_chunks(chunk_fn, carry, xs_tree, num_steps: int, every: int):
  """``chunk_fn`` over consecutive chunks of ``every`` steps (last shorter)."""
  num_full, rest = divmod(num_steps, every)
  if num_full == 1 and not rest:
    return chunk_fn(carry, xs_tree)
  outs = []
  if num_full:

    def body(carry, i):
      piece = jax.tree_util.tree_map(
          lambda v: lax.dynamic_slice_in_dim(v, i * every, every), xs_tree
      )
      return chunk_fn(carry, piece)

    carry, full = lax.scan(body, carry, jnp.arange(num_full))
    outs.append(
        jax.tree_util.tree_map(lambda v: v.reshape((-1,) + v.shape[2:]), full)
    )
  if rest:
    piece = jax.tree_util.tree_map(lambda v: v[num_full * every :], xs_tree)
    carry, tail = chunk_fn(carry, piece)
    outs.append(tail)
  return carry, jax.tree_util.tree_map(lambda *v: jnp.concatenate(v), *outs)


def make_update_fn(config, setup: Setup, axis_name: Optional[str]):
  """``update(train_state, (xs, ys, mask)) -> (train_state, metrics)``.

  The metrics hold the task's, ``objective`` (the summed loss),
  ``grad_norm`` (the mean over the update's optimizer steps) and
  ``nonfinite`` (1 when a loss or gradient norm was NaN or infinite). With
  ``config.on_nonfinite="skip"`` such an update is dropped: the train state
  keeps its parameters, optimizer and learner state, counts the skip, and
  the metrics are zero with a zero ``count``.
  """
  config = run_spec(config)
  task, learner, opt = setup.task, setup.learner, setup.optimizer
  skip = config.on_nonfinite == "skip"
  grad_fn = learner.sequence_grad(
      _loss_with_outputs(task),
      window=learner_window(config),
      has_aux=True,
      axis_name=axis_name,
  )

  def chunk(carry, piece):
    params, opt_state, state, rng = carry
    xs, ys, mask = piece
    rng, step_rng = jax.random.split(rng)
    res = grad_fn(params, state, step_rng, xs, ys, mask)
    updates, opt_state = opt.update(res.grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    norm = optax.global_norm(res.grads)[None]  # one entry per chunk
    return (params, opt_state, res.state, rng), (res.losses, res.aux, norm)

  def update(ts: TrainState, batch):
    xs, ys, mask = batch
    num_steps = xs.shape[0]
    every = config.update_every or num_steps
    rng, run_rng = jax.random.split(ts.rng)
    # A stream runs on from the previous chunk; sequences start afresh.
    start = ts.learner_state if task.stream else learner.reset(ts.learner_state)
    carry = (ts.params, ts.opt_state, start, run_rng)
    (params, opt_state, state, _), (losses, outs, norms) = _apply_in_chunks(
        chunk, carry, (xs, ys, mask), num_steps, every
    )
    finite = jnp.all(jnp.isfinite(losses)) & jnp.all(jnp.isfinite(norms))
    metrics = dict(
        task.metric(outs, ys, mask),
        objective=jnp.sum(losses),
        grad_norm=jnp.mean(norms),
    )
    if axis_name is not None:
      metrics = lax.pmean(metrics, axis_name)
      # Every device takes the same branch.
      finite = lax.pmin(finite.astype(jnp.int32), axis_name).astype(bool)
    skipped = ts.skipped
    if skip:
      keep = lambda new, old: jax.tree_util.tree_map(
          lambda a, b: jnp.where(finite, a, b), new, old
      )
      params, opt_state = keep((params, opt_state), (ts.params, ts.opt_state))
      state = keep(state, ts.learner_state)
      metrics = {k: jnp.where(finite, v, 0.0) for k, v in metrics.items()}
      skipped = skipped + (~finite).astype(jnp.int32)
    metrics["nonfinite"] = (~finite).astype(jnp.float32)
    new = TrainState(params, opt_state, state, ts.step + 1, rng, skipped)
    return new, metrics

  return update


def make_eval_fn(setup: Setup, axis_name: Optional[str] = None):
  """``evaluate(params, learner_state, (xs, ys, mask)) -> metrics``.

  With ``axis_name`` the metrics are the count-weighted means over every
  device of the axis (all processes), each with the total ``count``.
  """

  def evaluate(params, state, batch):
    xs, ys, mask = batch
    outs, _ = setup.learner.unroll(params, setup.learner.reset(state), None, xs)
    metrics = setup.task.metric(outs, ys, mask)
    if axis_name is None:
      return metrics
    count = metrics["count"]
    total = lax.psum(count, axis_name)
    out = {
        k: lax.psum(v * count, axis_name) / jnp.maximum(total, 1.0)
        for k, v in metrics.items()
        if k != "count"
    }
    return dict(out, count=total)

  return evaluate


def process_part() -> tuple[int, int]:
  """``(index, count)`` of this process: its ``part`` of every batch."""
  return jax.process_index(), jax.process_count()


def process_rows(batch_size: int) -> slice:
  """This process's samples of a global batch of ``batch_size``."""
  return tasks_lib.base.part_slice("training", process_part(), batch_size)


def local_learner_state(state, rows: slice):
  """The batch-first entries of a (global) learner state cut to ``rows``."""
  mask = haiku_etp.state_batch_mask(state)
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
  mask = haiku_etp.state_batch_mask(state)
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


def _first_copy(v) -> np.ndarray:
  """Device 0's copy of a replicated leaf, read without running a program."""
  if isinstance(v, jax.Array):
    return np.asarray(v.addressable_data(0)).reshape(v.shape[1:])
  return np.asarray(v)[0]


class _Pmap:
  """Local devices with ``pmap``: the batch sharded, the rest replicated."""

  name = "pmap"

  def __init__(self, config, setup: Setup):
    # pmap takes the same device list on every process: all of them (None),
    # or a subset of one process's devices (num_devices is 0 on several).
    devices = None
    if config.num_devices:
      devices = jax.local_devices()[: config.num_devices]
    self.n = config.num_devices or jax.local_device_count()
    self.rows = process_rows(config.batch_size)
    self.update = jax.pmap(
        make_update_fn(config, setup, _AXIS),
        axis_name=_AXIS,
        donate_argnums=0,
        devices=devices,
    )
    self.evaluate = jax.pmap(
        make_eval_fn(setup, _AXIS), axis_name=_AXIS, devices=devices
    )

  def put_state(self, ts: TrainState) -> TrainState:
    rep = lambda t: haiku_etp.replicate(t, self.n)
    local = local_learner_state(ts.learner_state, self.rows)
    return TrainState(
        rep(ts.params),
        rep(ts.opt_state),
        haiku_etp.shard_state(local, self.n),
        rep(ts.step),
        rep(ts.rng),
        rep(ts.skipped),
    )

  def get_state(self, ts: TrainState) -> TrainState:
    first = lambda t: jax.tree_util.tree_map(_first_copy, t)
    state = haiku_etp.unshard_state(jax.device_get(ts.learner_state))
    state = global_learner_state(state)
    return TrainState(
        first(ts.params),
        first(ts.opt_state),
        state,
        first(ts.step),
        first(ts.rng),
        first(ts.skipped),
    )  # pyformat: disable

  def put_batch(self, batch) -> tuple:
    # NumPy only: the batch goes to the devices with the pmap call itself.
    def split(v):
      v = np.asarray(v)
      v = v.reshape((v.shape[0], self.n, v.shape[1] // self.n) + v.shape[2:])
      return np.moveaxis(v, 1, 0)

    return tuple(split(v) for v in batch)

  def eval_metrics(self, out: dict) -> list[dict]:
    # Every device holds the means over all devices of all processes.
    return [{k: v[0] for k, v in jax.device_get(out).items()}]

  def train_metrics(self, out: dict) -> dict:
    return {k: v[0] for k, v in jax.device_get(out).items()}


def _state_spec(state, batch_spec):
  """Batch-first leaves of a learner state sharded, the rest replicated."""
  return jax.tree_util.tree_map(
      lambda batched: batch_spec if batched else P(),
      haiku_etp.state_batch_mask(state),
  )


class _Mesh:
  """All devices in one ``Mesh``; ``jit`` with the batch axis sharded."""

  name = "mesh"

  def __init__(self, config, setup: Setup, template: TrainState):
    devices = jax.devices()[: config.num_devices or None]
    self.mesh = Mesh(np.asarray(devices), (_AXIS,))
    shard = lambda spec: NamedSharding(self.mesh, spec)
    rep = lambda t: jax.tree_util.tree_map(lambda _: shard(P()), t)
    self.state_sharding = TrainState(
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
        make_update_fn(config, setup, None),
        in_shardings=(self.state_sharding, self.batch_sharding),
        out_shardings=(self.state_sharding, shard(P())),
        donate_argnums=0,
    )
    self.evaluate = jax.jit(make_eval_fn(setup), out_shardings=shard(P()))

  def put_state(self, ts: TrainState) -> TrainState:
    # Every process holds the whole host state; each places its shards.
    def put(v, sharding):
      v = np.asarray(v)
      return jax.make_array_from_callback(v.shape, sharding, lambda i: v[i])

    return jax.tree_util.tree_map(put, ts, self.state_sharding)

  def get_state(self, ts: TrainState) -> TrainState:
    if jax.process_count() > 1:
      return multihost_utils.process_allgather(ts, tiled=True)
    return jax.tree_util.tree_map(np.asarray, jax.device_get(ts))

  def put_batch(self, batch) -> tuple:
    return tuple(
        jax.make_array_from_process_local_data(self.batch_sharding, v)
        for v in batch
    )

  def eval_metrics(self, out: dict) -> list[dict]:
    return [jax.device_get(out)]

  def train_metrics(self, out: dict) -> dict:
    return jax.device_get(out)


def make_parallel(config, setup: Setup, template: TrainState):
  """The ``pmap`` or ``mesh`` runner of ``config.parallel``."""
  config = run_spec(config)
  if config.parallel == "pmap":
    return _Pmap(config, setup)
  return _Mesh(config, setup, template)


def _train_batches(task, config, start: int):
  """This process's part of the batches of steps ``start, start + 1, ...``."""
  for step in range(start, config.train_steps):
    seed = tasks_lib.train_seed(config.seed, step)
    yield tuple(task.batch(seed, config.batch_size, part=process_part()))


def _eval_batches(task, config):
  """This process's part of the held-out batches (the same every time)."""
  if task.eval_batches is not None:
    yield from map(
        tuple, task.eval_batches(config.batch_size, part=process_part())
    )
    return
  for i in range(config.eval_batches):
    seed = tasks_lib.eval_seed(config.seed, i)
    yield tuple(task.batch(seed, config.batch_size, part=process_part()))


def evaluate(runner, setup: Setup, ts: TrainState, config) -> dict:
  """Mean metrics over the held-out batches (all processes')."""
  results = []
  for batch in _eval_batches(setup.task, config):
    out = runner.evaluate(ts.params, ts.learner_state, runner.put_batch(batch))
    results.extend(runner.eval_metrics(out))
  return tasks_lib.mean_metrics(results)


class Result(NamedTuple):
  """What ``train`` returns.

  Attributes:
    state: the final train state, on the host.
    eval_metrics: the final evaluation's metrics.
    workdir: the run's directory (``metrics.jsonl``, checkpoints, plots).
    plots: paths of the PNG files drawn (empty without matplotlib).
    seconds: wall time of this call.
    metric_name: the task's headline metric in ``eval_metrics``.
  """

  state: TrainState
  eval_metrics: dict
  workdir: str
  plots: tuple
  seconds: float
  metric_name: str


class Interrupted(Exception):
  """Raised by ``train(..., interrupt_after=k)`` as a kill would stop it."""


def _log_progress(step, total, metrics, rate, elapsed, name):
  eta = (total - step) / rate if rate > 0 else float("nan")
  logging.info(
      "step %d/%d  loss %.4f  %s %.4f  %.2f steps/s  elapsed %.0fs  ETA %.0fs",
      step,
      total,
      metrics["loss"],
      name,
      metrics[name],
      rate,
      elapsed,
      eta,
  )  # pyformat: disable


def resolve_workdir(workdir: str) -> str:
  """``workdir`` as an absolute path, created; orbax needs absolute paths.

  Raises:
    ConfigError: if ``workdir`` is empty, a file, or cannot be created or
      written.
  """
  if not workdir:
    raise ConfigError("--workdir is empty; give the run's directory.")
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(
        f"--workdir={workdir} is a file ({path}), not a directory; give a "
        "directory for the run's checkpoints, metrics and plots."
    )
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ConfigError(
        f"--workdir={workdir}: cannot create {path} ({e.strerror}); give a "
        "directory you can write."
    ) from None
  if not os.access(path, os.W_OK | os.X_OK):
    raise ConfigError(
        f"--workdir={workdir}: {path} is not writable; give a directory you "
        "can write."
    )
  return path


_ABSENT = object()  # a config field that one of two configs lacks


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def config_changes(saved: dict, config) -> list[tuple[str, Any, Any]]:
  """``(field, saved value, current value)`` of every field that differs.

  ``saved`` is a config as a checkpoint's JSON record holds it; the current
  ``config`` goes through JSON too, so tuples compare equal to lists.
  """
  now = _flatten(json.loads(json.dumps(config.to_dict())))
  before = _flatten(saved)
  return [
      (k, before.get(k, _ABSENT), now.get(k, _ABSENT))
      for k in sorted(set(now) | set(before))
      if before.get(k, _ABSENT) != now.get(k, _ABSENT)
  ]


def _shape_table(tree) -> tuple:
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  return treedef, tuple((tuple(l.shape), jnp.dtype(l.dtype)) for l in leaves)


def _config_from(saved: dict, changes=()) -> Any:
  """``saved`` as a ConfigDict, with ``(field, _, value)`` changes applied."""
  config = ml_collections.ConfigDict(saved)
  for field, _, value in changes:
    *parents, name = field.split(".")
    node = config
    for p in parents:
      node = node[p]
    with node.unlocked():
      if value is _ABSENT:
        del node[name]
      else:
        node[name] = value
  return config


def _shaping_fields(saved: dict, changes: list, current) -> list:
  """The changed fields that change the train state's structure."""
  try:
    before = _shape_table(abstract_train_state(_config_from(saved)))
  except Exception:  # pylint: disable=broad-except
    # The saved config no longer builds: every change may be the cause.
    return list(changes)
  if before == _shape_table(current):
    return []
  shaping = []
  for change in changes:
    if change[0] in _RUN_LENGTH_FIELDS:
      continue
    try:
      alone = _shape_table(abstract_train_state(_config_from(saved, [change])))
    except Exception:  # pylint: disable=broad-except
      alone = None
    if alone != before:
      shaping.append(change)
  # A combination of changes that only together reshape the state.
  return shaping or [c for c in changes if c[0] not in _RUN_LENGTH_FIELDS]


def _show(value) -> str:
  return "(absent)" if value is _ABSENT else repr(value)


def _check_resume(config, workdir: str, template: TrainState):
  """``check_meta(step, meta)`` for a resume of ``config`` in ``workdir``.

  It raises :class:`ConfigError` when the checkpoint's config differs from
  ``config`` in fields that shape the train state (``template``), naming
  each with both values, and logs the other changes.
  """

  def check(step: int, meta: dict) -> None:
    saved = meta.get("config")
    if not isinstance(saved, dict):
      return
    changes = config_changes(saved, config)
    if not changes:
      return
    shaping = _shaping_fields(saved, changes, template)
    if shaping:
      names = "; ".join(
          f"config.{f}: {_show(a)} in the checkpoint, {_show(b)} now"
          for f, a, b in shaping
      )
      others = [c for c in changes if c not in shaping]
      others = (
          " (Also changed, which alone would be allowed: "
          + "; ".join(
              f"config.{f}: {_show(a)} -> {_show(b)}" for f, a, b in others
          )
          + ".)"
          if others
          else ""
      )
      raise ConfigError(
          f"{workdir} holds a run (checkpoint at step {step}) whose train "
          f"state this config cannot restore; fields that shape it changed: "
          f"{names}. Train in a new --workdir, or drop the override to "
          f"resume.{others}"
      )
    for field, a, b in changes:
      logging.warning(
          "config.%s changed since the checkpoint at step %d: %s -> %s (it "
          "does not shape the train state; the run continues with the new "
          "value).",
          field,
          step,
          _show(a),
          _show(b),
      )  # pyformat: disable

  return check


def _diverged_message(step, values, checkpointer, last_saved) -> str:
  if last_saved is None:
    where = "No checkpoint was written before it."
  else:
    where = (
        f"The last good checkpoint is step {last_saved} in "
        f"{checkpointer.directory}; it is kept, and rerunning resumes from it."
    )
  return (
      f"Training diverged at step {step}: the loss or the gradient norm is "
      f"not finite (objective {values['objective']}, gradient norm "
      f"{values['grad_norm']}). {where} Lower config.learning_rate, set "
      "config.clip_norm, or set config.on_nonfinite='skip' to drop such "
      "updates and go on."
  )


def train(
    config,
    workdir: str,
    *,
    interrupt_after: Optional[int] = None,
    plot: bool = True,
) -> Result:
  """Trains ``config`` in ``workdir``, resuming from its newest checkpoint.

  Args:
    config: an ``ml_collections.ConfigDict`` (see the module docstring).
    workdir: the run's directory, relative or absolute; reusing it resumes
      the run. A finished run reports its result without training.
    interrupt_after: stop abruptly after this many updates of this call,
      without the final checkpoint or evaluation, as a killed process would
      (tests use it); raises :class:`Interrupted`.
    plot: draw the learning curves (and a raster for spiking models) at the
      end when matplotlib is installed.

  Returns:
    A :class:`Result`.

  Raises:
    ConfigError: for a bad config or work directory (before anything is
      compiled), or a resume whose config changed a field that shapes the
      train state.
    experiments.checkpoints.CheckpointError: when the work directory has
      checkpoints and none can be read.
    Diverged: for a non-finite loss or gradient norm with
      ``config.on_nonfinite="stop"``.
  """
  start_time = time.time()
  spec = run_spec(config)  # validated once; everything below reads it
  config = spec.config
  num_devices = device_count(spec)
  # The task, model and learner check their fields before the work
  # directory is made: a rejected config leaves nothing behind.
  setup = build(spec)
  workdir = resolve_workdir(workdir)
  # The host state is the whole run's, the same on every process: the
  # runner places each process's share, checkpoints hold it all.
  host_state = init_train_state(spec, setup, spec.batch_size)
  checkpointer = checkpoints_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"),
      every=config.checkpoint_every,
      keep=config.keep_checkpoints,
  )
  restored = checkpointer.restore_latest(
      host_state, check_meta=_check_resume(config, workdir, host_state)
  )
  resume, wall_offset = None, 0.0
  if restored is not None:
    resume, host_state = restored.step, restored.state
    wall_offset = float(restored.meta.get("wall_time", 0.0))
    logging.info("Resumed %s from step %d.", workdir, resume)
  elapsed = lambda: wall_offset + time.time() - start_time
  writer = metrics_lib.MetricsWriter(
      workdir, enabled=jax.process_index() == 0, resume_step=resume
  )
  runner = make_parallel(spec, setup, host_state)
  ts = runner.put_state(host_state)
  start = int(host_state.step)
  meta = {"config": config.to_dict()}
  if start >= config.train_steps:
    logging.info(
        "%s is trained to step %d (config.train_steps=%d): nothing to train; "
        "evaluating.",
        workdir,
        start,
        config.train_steps,
    )  # pyformat: disable
  else:
    logging.info(
        "Training %s with %s on %d %s device(s) (%s), steps %d..%d.",
        spec.task_name,
        config.learner,
        num_devices,
        jax.default_backend(),
        config.parallel,
        start,
        config.train_steps,
    )  # pyformat: disable
  # Batches are made ahead on a host thread (NumPy only: device work from a
  # second thread can starve the CPU collectives of the update).
  batches = prefetch_lib.prefetch(
      _train_batches(setup.task, spec, start), size=2
  )
  stop_on_nonfinite = spec.on_nonfinite == "stop"
  unread, logged = [], []  # device metrics not yet read; host ones to log
  last_log, last_log_time, last_saved = start, time.time(), resume
  done, skipped = 0, int(host_state.skipped)

  def read_metrics():
    """Reads the pending metrics; stops a diverged run before it saves."""
    nonlocal skipped
    for step_m, m in unread:
      values = runner.train_metrics(m)
      if values["nonfinite"]:
        if stop_on_nonfinite:
          raise Diverged(
              _diverged_message(step_m, values, checkpointer, last_saved)
          )
        logging.warning(
            "step %d: non-finite loss or gradient norm; the update is "
            "skipped (config.on_nonfinite='skip').",
            step_m,
        )  # pyformat: disable
        skipped += 1
      logged.append(values)
    unread.clear()

  try:
    with warnings.catch_warnings():
      warnings.simplefilter("once", haiku_etp.ApproximationWarning)
      for batch in batches:
        ts, m = runner.update(ts, runner.put_batch(batch))
        step = start + done + 1
        done += 1
        unread.append((step, m))
        if interrupt_after is not None and done >= interrupt_after:
          raise Interrupted(f"interrupted after step {step}")
        if step % config.log_every == 0 or step == config.train_steps:
          read_metrics()
          now = time.time()
          rate = (step - last_log) / max(now - last_log_time, 1e-9)
          kept = [_weighted(v) for v in logged if not v["nonfinite"]]
          if kept:
            values = tasks_lib.mean_metrics(kept)
            del values["nonfinite"]
            values["steps_per_sec"] = rate
            values["skipped"] = skipped  # updates skipped so far
            writer.write(step, "train", values, elapsed())
            _log_progress(
                step,
                config.train_steps,
                values,
                rate,
                elapsed(),
                setup.task.metric_name,
            )  # pyformat: disable
          logged.clear()
          last_log, last_log_time = step, now
        if step % config.eval_every == 0 and step != config.train_steps:
          read_metrics()
          values = evaluate(runner, setup, ts, spec)
          writer.write(step, "eval", values, elapsed())
          logging.info("eval at step %d: %s", step, _fmt(values))
        if step % config.checkpoint_every == 0:
          read_metrics()
          checkpointer.save(
              step,
              runner.get_state(ts),
              dict(meta, step=step, wall_time=elapsed()),
          )
          last_saved = step
      read_metrics()
      final = evaluate(runner, setup, ts, spec)
  except (Interrupted, Diverged):
    batches.close()
    checkpointer.close()
    writer.close()
    raise
  host_state = runner.get_state(ts)
  step = int(host_state.step)
  writer.write(step, "eval", final, elapsed())
  checkpointer.wait()
  if step not in checkpointer.all_steps():
    checkpointer.save(
        step, host_state, dict(meta, step=step, wall_time=elapsed()), force=True
    )
  checkpointer.close()
  writer.close()
  if int(host_state.skipped):
    logging.warning(
        "%d update(s) of this run were skipped for a non-finite loss or "
        "gradient norm.",
        int(host_state.skipped),
    )  # pyformat: disable
  plots = ()
  if plot and jax.process_index() == 0:
    plots = _plots(workdir, config, setup, host_state)
  logging.info(
      "Done: test %s %.4f, loss %.4f. Metrics: %s%s",
      setup.task.metric_name,
      final[setup.task.metric_name],
      final["loss"],
      writer.path,
      "".join(f", {p}" for p in plots),
  )  # pyformat: disable
  return Result(
      host_state,
      final,
      workdir,
      plots,
      time.time() - start_time,
      setup.task.metric_name,
  )


def _weighted(m: dict) -> dict:
  return dict(m, count=m.get("count", 1.0))


def _fmt(values: dict) -> str:
  return ", ".join(
      f"{k} {v:.4f}"
      for k, v in values.items()
      if isinstance(v, float) and k != "count"
  )


def _plots(workdir, config, setup, host_state) -> tuple:
  try:
    from experiments import plotting  # pylint: disable=g-import-not-at-top
  except ImportError:
    logging.info("matplotlib is not installed: no plots.")
    return ()
  return plotting.plot_run(workdir, config, setup, host_state)
