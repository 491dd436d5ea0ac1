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
r"""Oracles and comparisons for testing ETP primitives and learners.

The rule oracles need no compiler: they drive a primitive's trace rules on a
linear hidden system whose exact gradient ``jax.grad`` gives,

.. math::
  h^t[p, :] = D^t[p]\, h^{t-1}[p, :] + D_f^t[p, :]\, y^t[p], \qquad
  y^t = \mathrm{op}(x^t, \theta), \qquad
  L = \sum_t \langle g^t, h^t \rangle,

with random per-position ``S x S`` blocks ``D^t``, tail Jacobians ``D_f^t``
and learning signals ``g^t``. D-RTRL is exact on this system for every op, so
its error is a direct check of the rules.
"""

import contextlib
import re
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union
import warnings

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.core import state_layout
from haiku_etp._src.core import primitive


def relative_error(actual: Any, expected: Any) -> float:
  """Largest per-leaf ``||actual - expected|| / ||expected||`` of two trees."""
  errs = jax.tree_util.tree_map(
      lambda a, e: float(
          np.linalg.norm(np.asarray(a, np.float64) - np.asarray(e, np.float64))
          / max(float(np.linalg.norm(np.asarray(e, np.float64))), 1e-300)
      ),
      actual,
      expected,
  )
  return max(jax.tree_util.tree_leaves(errs), default=0.0)


def cosine_similarity(actual: Any, expected: Any) -> float:
  """Cosine between two trees flattened into single vectors."""
  flat = lambda t: np.concatenate(
      [
          np.ravel(np.asarray(l, np.float64))
          for l in jax.tree_util.tree_leaves(t)
      ]
  )
  a, e = flat(actual), flat(expected)
  return float(a @ e / max(np.linalg.norm(a) * np.linalg.norm(e), 1e-300))


class OracleResult(NamedTuple):
  """Gradients from the rules (``online``) and from ``jax.grad`` (``exact``)."""

  online: dict
  exact: dict

  @property
  def relative_error(self) -> float:
    return relative_error(self.online, self.exact)

  @property
  def cosine(self) -> float:
    return cosine_similarity(self.online, self.exact)


class _System(NamedTuple):
  d: jax.Array  # (T, *H, S, S)
  d_f: jax.Array  # (T, *H, S)
  g: jax.Array  # (T, *H, S)
  hidden_shape: tuple[int, ...]
  batch_axis: Optional[int]


def _system(
    prim: primitive.ETPPrimitive,
    weights: Mapping[str, jax.Array],
    xs: Optional[jax.Array],
    params: Mapping[str, Any],
    num_steps: int,
    num_hidden_state: int,
    batch_size: Optional[int],
    leak: Optional[float],
    seed: int,
) -> _System:
  x0 = None if xs is None else xs[0]
  hidden_shape: tuple[int, ...]
  batch_axis: Optional[int]
  y = jax.eval_shape(lambda x, w: prim.bind_operands(x, w, params), x0, weights)
  if prim.x_invar_index is None and batch_size is not None:
    hidden_shape, batch_axis = (batch_size,) + tuple(y.shape), 0
  else:
    hidden_shape = tuple(y.shape)
    axes = prim.batch_axes(params) if prim.batched else None
    batch_axis = None if axes is None else axes[1]
  s = num_hidden_state
  dtype = y.dtype
  kd, kf, kg = jax.random.split(jax.random.PRNGKey(seed), 3)
  full = (num_steps,) + hidden_shape
  if leak is None:
    d = jax.random.uniform(kd, full + (s, s), dtype, -0.9, 0.9) / s
    d_f = jax.random.normal(kf, full + (s,), dtype)
  else:
    d = jnp.broadcast_to(leak * jnp.eye(s, dtype=dtype), full + (s, s))
    d_f = jnp.ones(full + (s,), dtype)
  g = jax.random.normal(kg, full + (s,), dtype)
  return _System(d, d_f, g, hidden_shape, batch_axis)


def _exact_grads(
    prim: primitive.ETPPrimitive,
    weights: Mapping[str, jax.Array],
    xs: Optional[jax.Array],
    params: Mapping[str, Any],
    system: _System,
) -> dict[str, jax.Array]:
  def loss(w: Mapping[str, jax.Array]) -> Any:
    h = jnp.zeros(system.hidden_shape + (system.d.shape[-1],), system.d.dtype)
    total: Union[float, jax.Array] = 0.0
    for t in range(system.d.shape[0]):
      y = prim.bind_operands(None if xs is None else xs[t], w, params)
      y = jnp.broadcast_to(y, system.hidden_shape)
      h = (
          jnp.einsum("...ab,...b->...a", system.d[t], h)
          + system.d_f[t] * y[..., None]
      )
      total = total + jnp.sum(system.g[t] * h)
    return total

  return jax.grad(loss)(dict(weights))


def _num_steps(xs: Optional[jax.Array], num_steps: Optional[int]) -> int:
  if xs is not None:
    return len(xs)
  if num_steps is None:
    raise ValueError("num_steps is required for an op without an input.")
  return num_steps


def _aval(value: jax.Array) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(value.shape, value.dtype)


def _init_avals(
    xs: Optional[jax.Array], weights: Mapping[str, jax.Array], system: _System
) -> tuple[
    Optional[jax.ShapeDtypeStruct],
    jax.ShapeDtypeStruct,
    dict[str, jax.ShapeDtypeStruct],
]:
  """``(x_aval, y_aval, weight_avals)`` for the init rules; y as h sees it."""
  x_aval = None if xs is None else _aval(xs[0])
  y_aval = jax.ShapeDtypeStruct(system.hidden_shape, system.d.dtype)
  return x_aval, y_aval, {k: _aval(v) for k, v in weights.items()}


def drtrl_rule_oracle(
    prim: primitive.ETPPrimitive,
    weights: Mapping[str, jax.Array],
    xs: Optional[jax.Array],
    params: Mapping[str, Any],
    *,
    num_hidden_state: int = 1,
    num_steps: Optional[int] = None,
    batch_size: Optional[int] = None,
    strip_batch: bool = False,
    fast: bool = True,
    seed: int = 0,
    window: int = 1,
) -> OracleResult:
  """Rolls a primitive's D-RTRL trace with its rules and compares to ``grad``.

  With ``window=1`` the trace is rolled step by step (``drtrl_update``) and
  contracted with every step's learning signal. With ``window=k > 1`` the
  gradient takes the learners' window form: per window of ``k`` steps (the
  last may be shorter), the in-window gradient with the entry state held,
  plus the entry trace contracted with the window's signal at its entry
  (``drtrl_solve``); the trace then crosses the window in closed form
  (``drtrl_window``), so the primitive's window rule is checked too.

  Args:
    prim: a registered ETP primitive.
    weights: its trainable operands by name (``{"weight": w, "bias": b}``).
    xs: inputs stacked over time, ``(T, *x.shape)``, or ``None`` for an op
      without an input (then ``num_steps`` gives ``T``).
    params: the primitive's params, as the op wrapper binds them.
    num_hidden_state: ``S``, states per position.
    num_steps: ``T`` for ops without an input.
    batch_size: for ops without an input, a batch the hidden state carries
      while the op's output does not (the output is broadcast).
    strip_batch: apply the rules per sample under ``vmap`` (batch stripped)
      instead of on the whole batch (batch kept).
    fast: use the primitive's closed-form fast paths when present.
    seed: seed of the random ``D``, ``D_f`` and learning signals.
    window: steps per window (1: the per-step roll).

  Returns:
    An :class:`OracleResult`.
  """
  if isinstance(window, bool) or not isinstance(window, int) or window < 1:
    raise ValueError(f"window must be an int >= 1, got {window!r}.")
  weights = dict(weights)
  steps = _num_steps(xs, num_steps)
  system = _system(
      prim, weights, xs, params, steps, num_hidden_state, batch_size, None, seed
  )
  trace = primitive.drtrl_init(
      prim, *_init_avals(xs, weights, system), num_hidden_state, params
  )

  def update(
      trace: primitive.Trace,
      d: jax.Array,
      d_f: jax.Array,
      x: Optional[jax.Array],
  ) -> primitive.Tree:
    return primitive.drtrl_update(
        prim, trace, d, d_f, x, weights, params, fast=fast
    )

  def solve(trace: primitive.Trace, g: jax.Array) -> primitive.Tree:
    return primitive.drtrl_solve(prim, trace, g, weights, params, fast=fast)

  if strip_batch:
    if system.batch_axis is None:
      raise ValueError(f"{prim.name} has no batch axis to strip.")
    x_axis: Optional[int] = None
    if prim.x_invar_index is not None:
      axes = prim.batch_axes(params)
      assert axes is not None  # the system's batch axis is the op's
      x_axis = axes[0]
    ax = system.batch_axis
    update = jax.vmap(update, in_axes=(0, ax, ax, x_axis))
    per_sample_solve = jax.vmap(solve, in_axes=(0, ax))
    solve = lambda trace, g: jax.tree_util.tree_map(
        lambda v: jnp.sum(v, axis=0), per_sample_solve(trace, g)
    )

  grads = jax.tree_util.tree_map(jnp.zeros_like, weights)
  if window > 1:
    roll = lambda trace, phi, cs, x: primitive.drtrl_window(
        prim, trace, phi, cs, x, weights, params, fast=fast
    )
    if strip_batch:
      xs_axis = None if x_axis is None else 1 + x_axis
      roll = jax.vmap(roll, in_axes=(0, ax, 1 + ax, xs_axis))
    grads = _window_form(
        system, xs, weights, params, prim, window, trace, roll, solve
    )
    return OracleResult(grads, _exact_grads(prim, weights, xs, params, system))
  for t in range(steps):
    x_t = None if xs is None else xs[t]
    trace = update(trace, system.d[t], system.d_f[t], x_t)
    grads = jax.tree_util.tree_map(jnp.add, grads, solve(trace, system.g[t]))
  return OracleResult(grads, _exact_grads(prim, weights, xs, params, system))


def _window_form(
    system: _System,
    xs: Optional[jax.Array],
    weights: Mapping[str, jax.Array],
    params: Mapping[str, Any],
    prim: primitive.ETPPrimitive,
    window: int,
    trace: primitive.Trace,
    roll: Callable[..., primitive.Tree],
    solve: Callable[..., primitive.Tree],
) -> dict[str, jax.Array]:
  """The oracle system's gradient in windows of ``window`` steps, the trace
  rolled through each window by ``roll(trace, phi, cs, xs)``."""
  steps = system.d.shape[0]
  mix = lambda a, b: jnp.einsum("...ab,...bc->...ac", a, b)
  h = jnp.zeros(system.hidden_shape + (system.d.shape[-1],), system.d.dtype)
  grads = jax.tree_util.tree_map(jnp.zeros_like, weights)
  for start in range(0, steps, window):
    ts = range(start, min(start + window, steps))

    def loss(w: Mapping[str, jax.Array], h_e: jax.Array, ts: range = ts) -> Any:
      h = h_e
      total: Union[float, jax.Array] = 0.0
      for t in ts:
        y = prim.bind_operands(None if xs is None else xs[t], w, params)
        y = jnp.broadcast_to(y, system.hidden_shape)
        h = (
            jnp.einsum("...ab,...b->...a", system.d[t], h)
            + system.d_f[t] * y[..., None]
        )
        total = total + jnp.sum(system.g[t] * h)
      return total, h

    (g_w, g_h), h_next = jax.grad(loss, argnums=(0, 1), has_aux=True)(
        weights, h
    )
    from_trace = solve(trace, g_h)
    grads = jax.tree_util.tree_map(
        lambda a, b, c: a + b + c, grads, g_w, from_trace
    )
    # Psi from the identity backwards: c_t = Psi D_f^t, Psi <- Psi D^t.
    psi = jnp.broadcast_to(
        jnp.eye(system.d.shape[-1], dtype=system.d.dtype), system.d.shape[1:]
    )
    cs: list[jax.Array] = []
    for t in reversed(ts):
      cs.insert(0, jnp.einsum("...ab,...b->...a", psi, system.d_f[t]))
      psi = mix(psi, system.d[t])
    x_window = None if xs is None else xs[start : start + len(ts)]
    trace = roll(trace, psi, jnp.stack(cs), x_window)
    h = h_next
  return grads


def pp_rule_oracle(
    prim: primitive.ETPPrimitive,
    weights: Mapping[str, jax.Array],
    xs: Optional[jax.Array],
    params: Mapping[str, Any],
    *,
    decay: Sequence[float],
    leak: Optional[float] = None,
    num_hidden_state: int = 1,
    num_steps: Optional[int] = None,
    batch_size: Optional[int] = None,
    seed: int = 0,
) -> OracleResult:
  r"""Rolls ES-D-RTRL (input- and output-side traces) with a primitive's rules.

  .. math::
    \epsilon_x^t = \alpha_x \epsilon_x^{t-1} + x^t, \quad
    \epsilon_f^t = \alpha_f D^t \epsilon_f^{t-1} + (1 - \alpha_f) D_f^t,

  with bias correction ``c = 1 - alpha_f ** n`` after ``n`` trace steps and
  the filtered constant as the input-side trace of input-free operands.

  Args:
    prim: a registered ETP primitive.
    weights: its trainable operands by name.
    xs: inputs stacked over time, or ``None`` for ops without an input.
    params: the primitive's params.
    decay: ``(alpha_x, alpha_f)``.
    leak: if given, the system is the uniform leak ``h <- leak * h + y``
      (``D = leak * I``, ``D_f = 1``); otherwise ``D`` and ``D_f`` are random.
    num_hidden_state: ``S``.
    num_steps: ``T`` for ops without an input.
    batch_size: for ops without an input, the hidden state's batch.
    seed: seed of the random system.

  Returns:
    An :class:`OracleResult`. It is exact at ``T = 1`` and for
    ``decay = (leak, 0)`` on the uniform leak; elsewhere it measures the
    approximation.
  """
  weights = dict(weights)
  alpha_x, alpha_f = decay
  steps = _num_steps(xs, num_steps)
  system = _system(
      prim, weights, xs, params, steps, num_hidden_state, batch_size, leak, seed
  )
  f_trace = primitive.pp_init(
      prim, *_init_avals(xs, weights, system), num_hidden_state, params
  )
  x_trace = None if xs is None else jnp.zeros_like(xs[0])
  one_trace = 0.0
  grads = jax.tree_util.tree_map(jnp.zeros_like, weights)
  for t in range(steps):
    if x_trace is not None and xs is not None:
      x_trace = alpha_x * x_trace + xs[t]
    one_trace = alpha_x * one_trace + 1.0
    f_trace = (
        alpha_f * jnp.einsum("...ab,...b->...a", system.d[t], f_trace)
        + (1.0 - alpha_f) * system.d_f[t]
    )
    correction = 1.0 - alpha_f ** (t + 1)
    step = primitive.pp_solve(
        prim,
        x_trace,
        one_trace,
        f_trace,
        system.g[t],
        weights,
        params,
        correction,
    )
    grads = jax.tree_util.tree_map(jnp.add, grads, step)
  return OracleResult(grads, _exact_grads(prim, weights, xs, params, system))


def bptt_grads(
    model: hk.TransformedWithState,
    loss_fn: Callable[[Any, Any], jax.Array],
    params: hk.Params,
    state: hk.State,
    rng: Optional[jax.Array],
    xs: Any,
    ys: Any,
) -> tuple[Any, jax.Array]:
  """Whole-sequence gradients by ``jax.grad`` through ``model.apply``.

  An oracle independent of the learners: it unrolls the Haiku step with
  ``lax.scan`` and differentiates the summed per-step loss. The per-step rng
  is ``fold_in(rng, t)``, as in the learners' sequence driver.

  Args:
    model: an ``hk.transform_with_state`` step.
    loss_fn: ``loss_fn(out_t, y_t)``, a scalar or per-sample losses
      ``(B,)`` (averaged over the batch, as the learners do).
    params: parameters.
    state: the model's Haiku state (learner entries are ignored).
    rng: rng or ``None``.
    xs: time-major inputs ``(T, ...)``.
    ys: time-major targets.

  Returns:
    ``(grads, losses)`` with per-step losses ``(T,)``.
  """
  state = {
      m: dict(e)
      for m, e in state.items()
      if not state_layout.is_learner_entry(m)
  }
  num_steps = jax.tree_util.tree_leaves(xs)[0].shape[0]

  def total(p: hk.Params) -> tuple[jax.Array, jax.Array]:
    def body(st: Any, inp: tuple[jax.Array, Any, Any]) -> tuple[Any, jax.Array]:
      t, x, y = inp
      r = None if rng is None else jax.random.fold_in(rng, t)
      out, st = model.apply(p, st, r, x)
      return st, jnp.mean(loss_fn(out, y))

    _, losses = jax.lax.scan(body, state, (jnp.arange(num_steps), xs, ys))
    return jnp.sum(losses), losses

  grads, losses = jax.grad(total, has_aux=True)(params)
  return grads, losses


@contextlib.contextmanager
def expect_warning(category: type[Warning], regex: Optional[str] = None):
  """Fails unless the block emits a warning of ``category`` (matching ``regex``).

  Use it instead of ``unittest``'s ``assertWarns``: that one reads
  ``__warningregistry__`` on every loaded module, and Haiku's stub module
  for its optional flax support raises ``ImportError`` on any attribute read.

  Raises:
    AssertionError: if no matching warning was emitted.
  """
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    yield caught
  for w in caught:
    if issubclass(w.category, category) and (
        regex is None or re.search(regex, str(w.message))
    ):
      return
  raise AssertionError(
      f"No {category.__name__} matching {regex!r} was emitted; got "
      f"{[(w.category.__name__, str(w.message)) for w in caught]}."
  )
