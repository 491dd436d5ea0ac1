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
r"""The window form of the gradient, in two terms.

For a window of ``k`` steps entered with hidden state :math:`h^e`,

.. math::
  \nabla_\theta L_\mathrm{win} = \frac{\partial L_\mathrm{win}}{\partial
  \theta}\Big|_{h^e\ \mathrm{fixed}} + \mathrm{contract}\Bigl(\epsilon^e,
  \frac{\partial L_\mathrm{win}}{\partial h^e}\Bigr).

:func:`in_window` computes the first term and :math:`\partial L / \partial
h^e` with one VJP of the window; :func:`trace_term` computes the second from
the traces at the entry; :func:`roll` then moves the traces through the
window's steps (``docs/design.md``, "The window form").
"""

from typing import Any, Callable, NamedTuple, Optional, Sequence

import haiku as hk
import jax
from jax import lax
from jax import tree_util
import jax.numpy as jnp

from haiku_etp._src.compiler import compiler as compiler_lib
from haiku_etp._src.compiler import recording
from haiku_etp._src.learners.algorithms import protocol
from haiku_etp._src.learners.forms import sequence

StepFn = Callable[..., tuple[Any, Any, Any]]


def call_loss(
    loss_fn: Callable[..., Any],
    out,
    y: Any,
    mask_t: Optional[jax.Array],
    has_aux: bool,
):
  """``(loss, aux)`` of one step, the mask applied (``sequence.step_loss``)."""
  res = loss_fn(out, y)
  if has_aux:
    if not isinstance(res, (tuple, list)) or len(res) != 2:
      raise TypeError(
          "has_aux=True, so loss_fn must return (loss, aux), got "
          f"{type(res).__name__}. Drop has_aux or return a pair."
      )
    loss, aux = res
  else:
    if isinstance(res, (tuple, list)):
      raise TypeError(
          f"loss_fn returned a {type(res).__name__} of {len(res)}; return a "
          "scalar (or per-sample losses), or pass has_aux=True to return "
          "(loss, aux)."
      )
    loss, aux = res, None
  return sequence.step_loss(loss, mask_t), aux


def with_hidden(
    model_state: Any, hidden_paths: Sequence[tuple[str, str]], values: Any
) -> dict:
  """A copy of ``model_state`` with the hidden entries set to ``values``."""
  state = {m: dict(e) for m, e in model_state.items()}
  for (m, n), v in zip(hidden_paths, values):
    state[m][n] = v
  return state


class InWindow(NamedTuple):
  """The in-window term of one window.

  Attributes:
    grads: the gradient with the entry hidden state held fixed.
    signals: ``dL_win / dh^e`` per hidden leaf, in the state's leaf order.
    losses: per-step losses ``(k,)``.
    aux: per-step auxiliary outputs, stacked (``None`` without ``has_aux``).
    records: per-step :class:`~haiku_etp._src.compiler.recording.StepRecord`, stacked
      (``None`` for BPTT).
    state: the model state after the window.
  """

  grads: Any
  signals: list
  losses: jax.Array
  aux: Any
  records: Any
  state: Any


def in_window(
    step_fn: StepFn,
    loss_fn: Callable[..., Any],
    params: Any,
    model_state: Any,
    hidden_paths: Sequence[tuple[str, str]],
    inputs: Any,
    *,
    has_aux: bool,
    remat=None,
) -> InWindow:
  """One VJP of the window with respect to the parameters and ``h^e``.

  Args:
    step_fn: ``step_fn(params, state, rng, x) -> (out, state, record)``.
    loss_fn: the per-step loss.
    params: parameters.
    model_state: the model state at the window's entry.
    hidden_paths: ``(module, name)`` of the hidden entries of the state.
    inputs: ``(rngs, xs, ys, masks)``, each with a leading ``k`` axis (the
      rngs and masks may be ``None``).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    remat: ``None``, or gradient checkpointing of the window's scan
      (``"sqrt"``/``True`` or steps per segment; see
      :func:`~haiku_etp._src.learners.forms.sequence.scan_remat`).

  Returns:
    An :class:`InWindow`.
  """
  k = tree_util.tree_leaves(inputs[1])[0].shape[0]

  def run(p, h):
    st = with_hidden(model_state, hidden_paths, h)

    def one_step(st, inp):
      rng_t, x_t, y_t, m_t = inp
      out, st, rec = step_fn(p, st, rng_t, x_t)
      loss, aux = call_loss(loss_fn, out, y_t, m_t, has_aux)
      return st, (loss, aux, rec)

    if remat is None or k == 1:
      st, (losses, auxes, recs) = sequence.scan_steps(one_step, st, inputs, k)
    else:
      segment = sequence.remat_segment(remat, k)
      st, (losses, auxes, recs) = sequence.scan_remat(
          one_step, st, inputs, k, segment
      )
    return jnp.sum(losses), (losses, auxes, recs, st)

  h_e = [model_state[m][n] for m, n in hidden_paths]
  _, pull, (losses, auxes, recs, state) = jax.vjp(
      run, params, h_e, has_aux=True
  )
  grads, signals = pull(jnp.ones((), losses.dtype))
  return InWindow(grads, signals, losses, auxes, recs, state)


def group_signals(
    compiled: compiler_lib.CompiledStep,
    hidden_paths: Sequence[tuple[str, str]],
    signals: Sequence[jax.Array],
) -> list:
  """Per group, the learning signal ``(*V, S)`` from per-leaf signals."""
  pos = {path: i for i, path in enumerate(hidden_paths)}
  out = []
  for g in range(len(compiled.groups)):
    leaves = [
        signals[pos[compiled.state_paths[leaf]]]
        for leaf in compiled.group_leaves(g)
    ]
    out.append(jnp.stack(leaves, axis=-1))
  return out


def trace_term(
    compiled: compiler_lib.CompiledStep,
    algorithm: protocol.TraceAlgorithm,
    trace: protocol.Traces,
    signals: protocol.Signals,
    params: Any,
):
  """The trace contraction, pulled back from the operands to ``params``.

  Args:
    compiled: the compiled step.
    algorithm: a :class:`~haiku_etp._src.learners.algorithms.protocol.TraceAlgorithm`.
    trace: the trace entries at the window's entry.
    signals: the :class:`~haiku_etp._src.learners.algorithms.protocol.Signals` at the entry.
    params: parameters.

  Returns:
    ``(grads, operands)``: a gradient shaped like ``params`` and the
    algorithm's operands (reused to roll the traces).
  """
  operands, pull = jax.vjp(lambda p: algorithm.operands(compiled, p), params)
  (grads,) = pull(algorithm.solve(compiled, trace, signals, operands))
  return grads, operands


def roll(
    compiled: compiler_lib.CompiledStep,
    algorithm: protocol.TraceAlgorithm,
    trace: protocol.Traces,
    records: recording.StepRecord,
    operands: Any,
    length: int,
):
  """Moves the traces through the window's ``length`` steps: in closed form
  where the algorithm has ``roll_window`` and ``length > 1``, else one
  ``roll`` per step."""
  roll_window = getattr(algorithm, "roll_window", None)
  if length > 1 and roll_window is not None:
    return roll_window(compiled, trace, records, operands)
  body = lambda tr, rec: (algorithm.roll(compiled, tr, rec, operands), None)
  trace, _ = sequence.scan_steps(body, trace, records, length)
  return trace


def feedback_matrices(
    needs: protocol.StepNeeds, trace: protocol.Traces
) -> dict:
  """``{relation index: B}`` from the traces' entries that ``needs.feedback``
  names (empty without)."""
  prefix = needs.feedback
  if prefix is None:
    return {}
  return {
      int(k[len(prefix) :]): lax.stop_gradient(v)
      for k, v in trace.items()
      if k.startswith(prefix)
  }


def recording_step_fn(
    compiled: compiler_lib.CompiledStep,
    model: hk.TransformedWithState,
    needs: protocol.StepNeeds,
    feedback=None,
) -> StepFn:
  """The step through the compiled program, recording what ``needs`` asks
  (a :class:`~haiku_etp._src.learners.algorithms.protocol.StepNeeds`); ``feedback`` is
  ``{relation index: B}`` (:func:`feedback_matrices`)."""
  paths: Sequence[str]
  if needs.full_jacobian_params is not None:
    paths = needs.full_jacobian_params
  else:
    paths = [
        p.path
        for p in compiled.parameters
        if p.role != compiler_lib.ParameterRole.NON_TEMPORAL
    ]
  by_relations = (
      needs.random_projection is not None
      and recording.projects_by_relations(compiled, paths)
  )
  cut = (
      recording.recurrent_relations(compiled)
      if needs.cut_recurrent
      else frozenset()
  )

  def step(p, st, rng: Optional[jax.Array], x: Any):
    out, new_state, record = recording.run_step(
        compiled,
        p,
        st,
        rng,
        x,
        jacobians=needs.per_position,
        cut_inputs=cut,
        feedback=feedback,
    )
    if needs.full_jacobian and needs.relation_form:
      j, deltas, _ = recording.relation_jacobian(compiled, p, st, rng, x)
      record = record._replace(full=recording.FullJacobian(j, None, deltas))
    elif needs.full_jacobian:
      full = recording.full_jacobian(model, p, st, rng, x, paths)
      record = record._replace(full=full)
    if needs.replay:
      record = record._replace(replay=(st, rng, x))
    if by_relations and needs.random_projection is not None:
      projection = recording.relation_projection(
          compiled, p, st, rng, x, paths, needs.random_projection
      )
    elif needs.random_projection is not None:
      projection = recording.sample_projection(
          model, p, st, rng, x, paths, needs.random_projection
      )
    if needs.random_projection is not None:
      record = record._replace(projection=projection)
    return out, new_state, record

  return step


def plain_step_fn(model: hk.TransformedWithState) -> StepFn:
  """The model's own ``apply``, without a record (BPTT)."""

  def step(p, st, rng: Optional[jax.Array], x: Any):
    out, st = model.apply(p, st, rng, x)
    return out, st, None

  return step


class Problem(NamedTuple):
  """What a gradient form needs besides the parameters, state and inputs.

  Attributes:
    compiled: the compiled step.
    algorithm: the trace algorithm (``None`` for BPTT: no traces).
    model: the ``hk.transform_with_state`` step.
    loss_fn: the per-step loss.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    remat: gradient checkpointing of the window's scan (BPTT's ``remat``);
      ``None`` stores every step.
  """

  compiled: Any
  algorithm: Any
  model: Any
  loss_fn: Callable[..., Any]
  has_aux: bool
  remat: Any = None


class Terms(NamedTuple):
  """A window's gradient before its traces are rolled.

  Attributes:
    grads: the gradient, the entry traces' term included.
    model_state: the model state after the window.
    records: per-step records, stacked (``None`` for BPTT).
    operands: the algorithm's operands (``None`` for BPTT).
    losses: per-step losses.
    aux: per-step auxiliary outputs.
  """

  grads: Any
  model_state: Any
  records: Any
  operands: Any
  losses: Any
  aux: Any


def terms(
    problem: Problem,
    params: Any,
    model_state: Any,
    trace: protocol.Traces,
    inputs: Any,
) -> Terms:
  """The in-window VJP plus the entry traces' contraction of one window.

  ``problem.algorithm`` is ``None`` for BPTT (no traces: the in-window term
  alone).
  """
  compiled, algorithm = problem.compiled, problem.algorithm
  hidden_paths = recording.hidden_entries(model_state)
  step_fn = (
      plain_step_fn(problem.model)
      if algorithm is None
      else recording_step_fn(
          compiled,
          problem.model,
          protocol.step_needs(algorithm, compiled),
          feedback_matrices(protocol.step_needs(algorithm, compiled), trace),
      )
  )
  w = in_window(
      step_fn,
      problem.loss_fn,
      params,
      model_state,
      hidden_paths,
      inputs,
      has_aux=problem.has_aux,
      remat=problem.remat,
  )  # pyformat: disable
  grads, operands = w.grads, None
  if algorithm is not None:
    signals = protocol.Signals(
        group_signals(compiled, hidden_paths, w.signals), list(w.signals)
    )
    from_traces, operands = trace_term(
        compiled, algorithm, trace, signals, params
    )
    grads = tree_util.tree_map(
        lambda a, b: a + b.astype(a.dtype), grads, from_traces
    )
  return Terms(grads, w.state, w.records, operands, w.losses, w.aux)


def gradient(
    problem: Problem,
    params: Any,
    model_state: Any,
    trace: protocol.Traces,
    inputs: Any,
):
  """One window's ``(grads, model_state, trace, losses, aux)``, the traces
  rolled through it; ``inputs`` are ``(rngs, xs, ys, masks)``, k-leading."""
  t = terms(problem, params, model_state, trace, inputs)
  if problem.algorithm is not None:
    k = tree_util.tree_leaves(inputs[1])[0].shape[0]
    trace = roll(
        problem.compiled, problem.algorithm, trace, t.records, t.operands, k
    )
  return t.grads, t.model_state, trace, t.losses, t.aux
