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
"""The pieces of a run that its config determines, and its compiled steps.

:func:`build` makes the task, model, learner and optimizer (a
:class:`Setup`); :func:`init_train_state` the first :class:`TrainState`;
:func:`make_update_fn` the update of one batch (the learner's
``sequence_grad`` with the optimizer stepping every ``update_every`` steps,
non-finite updates stopped or skipped) and :func:`make_eval_fn` the
evaluation of one held-out batch. Each takes a config or a
:class:`~experiments.run_spec.RunSpec`.
"""

from typing import Any, NamedTuple, Optional
import warnings

import haiku as hk
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import models
from experiments import tasks as tasks_lib
from experiments import run_spec as spec_lib
import haiku_etp


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


def make_task(config) -> tasks_lib.Task:
  """The task of ``config`` (one registry: ``tasks.get_task``)."""
  spec = spec_lib.run_spec(config, check=False)
  return tasks_lib.get_task(spec.task_name, **spec.task_options)


def make_learner(config, model) -> haiku_etp.Learner:
  """The registered learner ``config.learner`` on ``model``, with the
  options the config sets
  (:func:`~experiments.run_spec.learner_options`)."""
  spec = spec_lib.run_spec(config, check=False)
  options = spec.learner_options
  try:
    return haiku_etp.make_learner(spec.learner, model, **options)
  except (TypeError, ValueError) as e:
    fields = ", ".join(
        f"config.{spec_lib.option_field(k)}={v!r}" for k, v in options.items()
    )
    raise spec_lib.ConfigError(
        f"config.learner={spec.learner!r} with {fields or 'no options'}: "
        f"{e}"
    ) from None


def make_optimizer(config) -> optax.GradientTransformation:
  spec = spec_lib.run_spec(config, check=False)
  make = dict(
      adam=optax.adam, adamw=optax.adamw, sgd=optax.sgd, rmsprop=optax.rmsprop
  )[spec.optimizer]
  opt = make(spec.learning_rate)
  if spec.clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(spec.clip_norm), opt)
  return opt


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
    spec = spec_lib.run_spec(config, check=False)
    task = make_task(spec)
    _check_update_every(spec, task)
    model = models.make_model(spec.model, task.output_size)
    return Setup(task, model, make_learner(spec, model), make_optimizer(spec))
  except spec_lib.ConfigError:
    raise
  except ValueError as e:
    raise spec_lib.ConfigError(str(e)) from e


def _check_update_every(spec: spec_lib.RunSpec, task: tasks_lib.Task) -> None:
  """Raises :class:`~experiments.run_spec.ConfigError` for ``update_every``
  longer than a stream task's chunk: each training batch is one chunk and
  the learner takes its optimizer steps inside it, so the run would step
  once per chunk."""
  if not task.stream or spec.update_every <= task.num_steps:
    return
  raise spec_lib.ConfigError(
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
  config = spec_lib.run_spec(config)
  task, learner, opt = setup.task, setup.learner, setup.optimizer
  skip = config.on_nonfinite == "skip"
  grad_fn = learner.sequence_grad(
      _loss_with_outputs(task),
      window=spec_lib.learner_window(config),
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
