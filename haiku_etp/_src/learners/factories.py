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
r"""The learners' factories: D-RTRL, ES-D-RTRL, RTRL, BPTT, truncated BPTT,
and a learner from any trace algorithm.

Each builds a trace algorithm (:mod:`~haiku_etp._src.learners.algorithms.d_rtrl`,
:mod:`~haiku_etp._src.learners.algorithms.rtrl`) and hands it to the driver in
:mod:`~haiku_etp._src.learners.driver`; :mod:`~haiku_etp._src.learners.registry` registers
them by name.
"""

from typing import Any, Optional, Sequence

import haiku as hk

from haiku_etp._src.compiler import compiler as compiler_lib
from haiku_etp._src.learners.algorithms import influence
from haiku_etp._src.learners.algorithms import protocol
from haiku_etp._src.learners.algorithms import rtrl as rtrl_lib
from haiku_etp._src.learners.algorithms import d_rtrl as d_rtrl_lib
from haiku_etp._src.learners.driver import check_window
from haiku_etp._src.learners.driver import build_learner
from haiku_etp._src.learners.driver import Learner


def d_rtrl(
    model: hk.TransformedWithState,
    *,
    fast: bool = True,
    max_cross_bytes: Optional[int] = compiler_lib.DEFAULT_CROSS_BYTES,
    trace_dtype: Optional[Any] = None,
    window_roll: str = "closed",
) -> Learner:
  r"""D-RTRL: per-parameter eligibility traces, rolled forward in time.

  .. math::
    \epsilon^t[\dots, a] = \sum_b D^t[\dots, a, b]\, \epsilon^{t-1}[\dots, b]
      + D_f^t[\dots, a] \otimes x^t

  Equals BPTT when every group's transition is per-position and each
  relation's tail is elementwise (leaky integrators, feed-forward LIF/ALIF,
  dense and conv relations). When a group's state reaches another group
  through ETP ops (spikes into a leaky readout, a stack of spiking layers),
  cross-group traces carry that credit too, exactly, within
  ``max_cross_bytes``. Elsewhere the compiler names the cut, and the learner
  emits an :class:`ApproximationWarning` naming the parameters it affects.
  Memory ``O(B |theta| S)`` plus the cross-group traces (``report`` lists
  them), flat in time.

  Args:
    model: a ``hk.transform_with_state`` step ``x_t -> out_t`` (also one made
      with ``hk.without_apply_rng``).
    fast: use the primitives' closed-form fast paths.
    max_cross_bytes: the largest total size of the cross-group traces
      (``None``: no limit; 0: none). A relation whose traces do not fit keeps
      the cut, with a ``cross_trace_over_budget`` warning naming the bytes.
    trace_dtype: ``None``, or the dtype the traces are stored in between
      steps (``"bfloat16"``, ``"float16"``): half the trace memory and
      traffic; they are rolled and contracted in the parameters' dtype
      (:mod:`~haiku_etp._src.learners.precision`).
    window_roll: how ``sequence_grad(window=k)`` with ``k > 1`` moves the
      traces through a window: ``"closed"`` in closed form, once per window
      (one reverse scan of output-sized coefficients and one contraction
      over the window's steps per relation: no trace is read or written
      per step; ``report`` names any relation that still rolls per step),
      or ``"per_step"``, one step at a time (for comparisons). The values
      are the same.

  Returns:
    A :class:`Learner`.

  Raises:
    ValueError: for a negative or non-integer ``max_cross_bytes``, or an
      unknown ``window_roll``.

  >>> import haiku as hk, jax, jax.numpy as jnp, haiku_etp
  >>> def step(x):
  ...   w = hk.get_parameter("w", (3, 4), init=jnp.ones)
  ...   v = haiku_etp.get_hidden_state("v", (x.shape[0], 4), x.dtype)
  ...   v = 0.9 * v + haiku_etp.dense(x, w)
  ...   haiku_etp.set_hidden_state("v", v)
  ...   return v
  >>> learner = haiku_etp.d_rtrl(hk.transform_with_state(step))
  >>> params, state = learner.init(None, jnp.ones((2, 3)))
  >>> sorted(learner.traces(state))
  ['~/w:weight@~']
  """
  compiler_lib.check_cross_budget(max_cross_bytes)
  d_rtrl_lib.check_window_roll(window_roll)
  return build_learner(
      model,
      d_rtrl_lib.DRTRL(
          fast=fast, max_cross_bytes=max_cross_bytes, window_roll=window_roll
      ),
      "d_rtrl",
      trace_dtype=trace_dtype,
  )  # pyformat: disable


def es_d_rtrl(
    model: hk.TransformedWithState,
    decay: Optional[d_rtrl_lib.Decay] = None,
    *,
    rank: Optional[int] = None,
    form: str = "window",
    window_roll: str = "per_step",
    trace_dtype: Optional[Any] = None,
) -> Learner:
  r"""ES-D-RTRL: input-side and output-side traces, ``O(B (I + O S))``.

  .. math::
    \epsilon_x^t = \alpha_x \epsilon_x^{t-1} + x^t, \quad
    \epsilon_f^t = \alpha_f D^t \epsilon_f^{t-1} + (1 - \alpha_f) D_f^t

  and the gradient ``xy_to_dw(eps_x, sum_a eps_f[..., a] g[..., a] / c)`` with
  bias correction ``c = 1 - alpha_f ** n`` after ``n`` trace steps. Exact at
  ``T = 1`` and with ``decay=(lam, 0)`` on a uniform leak
  ``h <- lam h + op(x)``; an approximation elsewhere, so building it emits
  an :class:`ApproximationWarning`.

  Two forms. ``form="window"`` (the default) is the window form every
  learner shares: the step's own gradient from a VJP, plus the entry traces
  contracted with ``dL/dh`` at the entry. ``form="fused"`` folds the step
  into the traces first and contracts once per relation and step,

  .. math::
    \nabla\theta_t \approx \mathrm{xy\_to\_dw}\bigl(\epsilon_x^t,
      [\alpha_f \textstyle\sum_a \epsilon_f^{t-1} g^{t-1}
      + (1 - \alpha_f)\, \partial L_t / \partial y_t] / c\bigr)

  where ``dL_t/dy_t`` and ``g^{t-1} = dL_t/dh^{t-1}`` come from one VJP of
  the step that stops at the traced weights and at the inputs of recurrent
  relations: no weight gradient inside the VJP and no backward pass through
  a recurrent weight, so a step costs about the forward pass plus one weight
  contraction (with ``alpha_f = 0`` it keeps no output-side traces and
  computes no ``D``). It is another approximation (the recurrent path's
  one-step credit is dropped), exact at ``T = 1`` and with
  ``decay=(lam, 0)`` on a uniform leak that the loss reads after the step
  writes it; it needs ``window=1``.

  Args:
    model: a ``hk.transform_with_state`` step.
    decay: a float ``alpha`` (both decays) or an ``(alpha_x, alpha_f)`` pair
      in ``[0, 1)``; ``(0, 0)`` by default.
    rank: instead of ``decay``, an int ``n >= 1``: the decay
      ``(n - 1) / (n + 1)`` whose window has the centre of mass of ``n``
      steps.
    form: ``"window"`` or ``"fused"`` (see above).
    window_roll: how a window of ``k > 1`` steps moves the traces:
      ``"per_step"`` (the default: the traces are input- and output-sized,
      and rolling them in the window's loop costs less than the reverse
      scan, measured by ``experiments.benchmarks.benchmark``) or ``"closed"`` (the
      input side as one weighted sum over the steps, the output side
      through D-RTRL's reverse scan of the window's blocks); the values are
      the same.
    trace_dtype: ``None``, or the dtype the traces are stored in between
      steps (``"bfloat16"``, ``"float16"``): half the trace memory and
      traffic; they are rolled and contracted in the parameters' dtype
      (:mod:`~haiku_etp._src.learners.precision`).

  Returns:
    A :class:`Learner`.

  Raises:
    ValueError: for a decay outside ``[0, 1)``, a rank below 1, both, or an
      unknown ``form`` or ``window_roll``.
    TypeError: for an int ``decay`` (use ``rank=``) or another type.
  """
  alpha_x, alpha_f = d_rtrl_lib.parse_decay(decay, rank)
  if form not in ("window", "fused"):
    raise ValueError(f"form must be 'window' or 'fused', got {form!r}.")
  d_rtrl_lib.check_window_roll(window_roll)
  algorithm = d_rtrl_lib.ESDRTRL(
      alpha_x, alpha_f, fused=form == "fused", window_roll=window_roll
  )
  return build_learner(model, algorithm, "es_d_rtrl", trace_dtype=trace_dtype)


def rtrl(
    model: hk.TransformedWithState,
    *,
    max_trace_bytes: Optional[int] = influence.DEFAULT_TRACE_BYTES,
    params: Optional[Sequence[str]] = None,
    max_cross_bytes: Optional[int] = compiler_lib.DEFAULT_CROSS_BYTES,
    trace_dtype: Optional[Any] = None,
    window_roll: str = "closed",
) -> Learner:
  r"""RTRL: the exact online gradient, for any step.

  .. math::
    M_t = J_t M_{t-1} + I_t, \quad J_t = \partial h_t / \partial h_{t-1},
    \quad I_t = \partial h_t / \partial \theta

  ``M_t`` is each parameter's influence on every hidden value of a sample
  (all groups and positions); ``J_t`` the whole Jacobian of the step's
  hidden state, recurrent weights and gates included. It equals BPTT on
  every model whose samples are independent (and whose step draws no
  random numbers), parameters used outside ETP ops included, at
  ``O(B H^2 P)`` flops and ``B H P`` trace entries per step for ``H``
  hidden values per sample and ``P`` parameters: for small recurrent
  networks, and as the reference every approximation is measured against.

  Args:
    model: a ``hk.transform_with_state`` step.
    max_trace_bytes: the largest total size of the influence traces
      (``None``: no limit); a step over it raises a ``ValueError`` naming
      the bytes and what to use instead.
    params: paths of the parameters to keep the full influence of (a small
      recurrent weight, ``"rnn/w_h"``); the others get D-RTRL's traces and
      its exactness, and the approximation warning names them. ``None``:
      every parameter that reaches hidden state.
    max_cross_bytes: D-RTRL's cross-group budget for the other parameters
      (with ``params``).
    trace_dtype: ``None``, or the dtype the traces are stored in between
      steps (``"bfloat16"``, ``"float16"``): half the trace memory and
      traffic; they are rolled and contracted in the parameters' dtype
      (:mod:`~haiku_etp._src.learners.precision`).
    window_roll: how ``sequence_grad(window=k)`` with ``k > 1`` moves the
      influence through a window: ``"closed"``, once per window
      (:math:`M^{e+k} = \Phi M^e + \sum_t \Psi_t I_t`, the ``J M``
      product paid once per window; where every full parameter reaches the
      step through ETP ops, else step by step, as ``report`` says), or
      ``"per_step"``. The values are the same.

  Returns:
    A :class:`Learner`.

  Raises:
    ValueError: for a negative or non-integer budget, an empty ``params``
      or an unknown ``window_roll``.

  >>> import haiku as hk, jax, jax.numpy as jnp, haiku_etp
  >>> def step(x):
  ...   rnn = haiku_etp.VanillaRNN(4)
  ...   return rnn(x)
  >>> learner = haiku_etp.rtrl(hk.transform_with_state(step))
  >>> params, state = learner.init(jax.random.PRNGKey(0), jnp.ones((2, 3)))
  >>> {k: v.shape for k, v in learner.traces(state).items()}
  {'influence:vanilla_rnn/linear/b': (2, 4, 4), 'influence:vanilla_rnn/linear/w': (2, 4, 12), 'influence:vanilla_rnn/linear_1/b': (2, 4, 4), 'influence:vanilla_rnn/linear_1/w': (2, 4, 16)}
  """
  compiler_lib.check_cross_budget(max_cross_bytes)
  compiler_lib.check_byte_budget(max_trace_bytes, "max_trace_bytes")
  if params is not None:
    if isinstance(params, str) or not all(isinstance(p, str) for p in params):
      raise ValueError(
          "params must be a sequence of parameter paths ('module/name'), got "
          f"{params!r}."
      )
    if not params:
      raise ValueError(
          "params is empty; give the paths of the parameters to keep the "
          "full influence of, or None for all of them."
      )
    params = tuple(params)
  d_rtrl_lib.check_window_roll(window_roll)
  algorithm = rtrl_lib.RTRL(
      max_trace_bytes=max_trace_bytes,
      params=params,
      max_cross_bytes=max_cross_bytes,
      window_roll=window_roll,
  )
  return build_learner(model, algorithm, "rtrl", trace_dtype=trace_dtype)


def uoro(
    model: hk.TransformedWithState,
    *,
    projection: str = "signs",
    trace_dtype: Optional[Any] = None,
) -> Learner:
  """UORO (Tallec & Ollivier, 2017): an unbiased rank-one estimate of RTRL.

  Per sample, the influence ``dh/dtheta`` is estimated by ``u theta^T``
  (``H + P`` entries instead of RTRL's ``H P``), rolled with random signs
  drawn from the step's rng and the variance-reducing scalings; the
  gradient is unbiased (its mean over seeds is RTRL's), not exact. It
  needs an rng: ``sequence_grad(...)(params, state, rng, xs, ys)``.

  Args:
    model: a ``hk.transform_with_state`` step.
    projection: ``"signs"`` (the rule) or ``"ones"`` (no random signs:
      biased; for comparison).
    trace_dtype: ``None``, or the dtype the traces are stored in between
      steps (``"bfloat16"``, ``"float16"``): half the trace memory and
      traffic; they are rolled and contracted in the parameters' dtype
      (:mod:`~haiku_etp._src.learners.precision`).

  Returns:
    A :class:`Learner` named ``"uoro"``.

  Raises:
    ValueError: for an unknown ``projection``.
  """
  from haiku_etp._src.learners.algorithms import uoro as uoro_lib  # pylint: disable=g-import-not-at-top

  return build_learner(
      model,
      uoro_lib.UORO(projection=projection),
      "uoro",
      trace_dtype=trace_dtype,
  )


def snap(
    model: hk.TransformedWithState,
    n: int = 1,
    *,
    max_trace_bytes: Optional[int] = influence.DEFAULT_TRACE_BYTES,
    trace_dtype: Optional[Any] = None,
) -> Learner:
  """SnAp-n (Menick et al., 2020): RTRL's influence on a sparsity pattern.

  Keeps, per sample, the influence entries ``(h, theta_p)`` that ``n`` steps
  of the step's structure reach from ``theta_p`` and stores only those. On a
  dense recurrent layer SnAp-1 keeps each weight's influence on the unit it
  feeds (the recurrent Jacobian's diagonal included) and SnAp-2 is RTRL;
  wherever the pattern is closed (element-wise recurrences, or ``n`` at
  least the network's depth) it is RTRL exactly. A masked weight stores
  fewer entries. Each step records RTRL's per-sample Jacobians.

  Args:
    model: a ``hk.transform_with_state`` step.
    n: the pattern's number of steps, ``>= 1``.
    max_trace_bytes: the largest total size of the stored entries.
    trace_dtype: ``None``, or the dtype the traces are stored in between
      steps (``"bfloat16"``, ``"float16"``): half the trace memory and
      traffic; they are rolled and contracted in the parameters' dtype
      (:mod:`~haiku_etp._src.learners.precision`).

  Returns:
    A :class:`Learner` named ``"snap"``.

  Raises:
    ValueError: for ``n < 1`` or a bad ``max_trace_bytes``; at compile time,
      for stored entries over ``max_trace_bytes``.
  """
  from haiku_etp._src.learners.algorithms import snap as snap_lib  # pylint: disable=g-import-not-at-top

  return build_learner(
      model,
      snap_lib.SnAp(n=n, max_trace_bytes=max_trace_bytes),
      "snap",
      trace_dtype=trace_dtype,
  )


def eprop(
    model: hk.TransformedWithState,
    *,
    feedback: str = "symmetric",
    feedback_seed: int = 0,
    feedback_rate: float = 1e-3,
    readout: Optional[str] = None,
    max_cross_bytes: Optional[int] = compiler_lib.DEFAULT_CROSS_BYTES,
    trace_dtype: Optional[Any] = None,
) -> Learner:
  """e-prop (Bellec et al., 2020) with its feedback variants.

  D-RTRL's eligibility traces (e-prop's, on LIF/ALIF networks; the leaky
  readout's filter is carried by the cross-group traces) and e-prop's
  learning signal, the instantaneous ``dL_t/dh_t`` with no credit across
  the recurrent weights (their inputs are gradient-stopped in the step's
  VJP as in the traces), reaching the network through a feedback matrix
  ``B`` at the readout. ``"symmetric"``: ``B`` is the readout's weights, and
  the gradient is the exact gradient of the network whose recurrent inputs
  are gradient-stopped (on a network without recurrent weights,
  :func:`d_rtrl`'s and BPTT's). ``"random"``: ``B`` is drawn once from
  ``feedback_seed`` and kept, fixed, in the learner state (checkpointed with it).
  ``"adaptive"``: ``B`` starts random and relaxes toward the readout's
  weights by ``feedback_rate`` at every step.

  Args:
    model: a ``hk.transform_with_state`` step whose output is read out by an
      ETP op (``haiku_etp.Linear`` or ``LeakyReadout``).
    feedback: ``"symmetric"``, ``"random"`` or ``"adaptive"``.
    feedback_seed: the seed of ``B`` (random and adaptive feedback).
    feedback_rate: the adaptive feedback's relaxation per step, in ``(0, 1]``.
    readout: the path of the readout's weight (``"readout/w"``); ``None``:
      the last ETP op on hidden state whose output does not feed it back.
    max_cross_bytes: D-RTRL's cross-group budget.
    trace_dtype: ``None``, or the dtype the traces are stored in between
      steps (``"bfloat16"``, ``"float16"``): half the trace memory and
      traffic; they are rolled and contracted in the parameters' dtype
      (:mod:`~haiku_etp._src.learners.precision`).

  Returns:
    A :class:`Learner` named ``"eprop"``.

  Raises:
    ValueError: for an unknown ``feedback`` or a bad option (at build time),
      or a step without an ETP readout (at compile time).
  """
  from haiku_etp._src.learners.algorithms import feedback as feedback_lib  # pylint: disable=g-import-not-at-top

  algorithm = feedback_lib.Feedback(
      feedback=feedback,
      seed=feedback_seed,
      rate=feedback_rate,
      readout=readout,
      max_cross_bytes=max_cross_bytes,
      name="eprop",
  )
  return build_learner(model, algorithm, "eprop", trace_dtype=trace_dtype)


def rflo(
    model: hk.TransformedWithState,
    *,
    feedback_seed: int = 0,
    readout: Optional[str] = None,
    trace_dtype: Optional[Any] = None,
) -> Learner:
  r"""RFLO (Murray, 2019): random-feedback local online learning.

  For a leaky rate network (:class:`~haiku_etp.LeakyRNN`, ``h_t = (1 -
  alpha) h_{t-1} + alpha phi(W x_t + W_h h_{t-1} + b)``) the traces are
  RFLO's, ``P_{ij} <- (1 - alpha) P_{ij} + alpha phi'(u_i) r_j`` (D-RTRL's
  cut of the recurrent weight), and the error reaches the units through a
  fixed random feedback matrix at the readout, drawn from ``feedback_seed`` and kept
  in the learner state. The same rule as ``eprop(feedback="random")``,
  named for rate networks.

  Args:
    model: a ``hk.transform_with_state`` step read out by an ETP op.
    feedback_seed: the seed of the feedback matrix.
    readout: the path of the readout's weight (``None``: found as for
      :func:`eprop`).
    trace_dtype: ``None``, or the dtype the traces are stored in between
      steps (``"bfloat16"``, ``"float16"``): half the trace memory and
      traffic; they are rolled and contracted in the parameters' dtype
      (:mod:`~haiku_etp._src.learners.precision`).

  Returns:
    A :class:`Learner` named ``"rflo"``.
  """
  from haiku_etp._src.learners.algorithms import feedback as feedback_lib  # pylint: disable=g-import-not-at-top

  algorithm = feedback_lib.Feedback(
      feedback="random", seed=feedback_seed, readout=readout, name="rflo"
  )
  return build_learner(model, algorithm, "rflo", trace_dtype=trace_dtype)


def bptt(model: hk.TransformedWithState, remat=None) -> Learner:
  """Backpropagation through time, the reference.

  ``sequence_grad`` defaults to one window over the whole sequence (exact
  BPTT, memory linear in ``T``); ``window=k`` gives truncated BPTT.
  ``value_and_grad`` is the one-step (truncated) gradient.

  With ``remat``, the scan over a window is checkpointed (``jax.checkpoint``
  of segments of steps): the backward pass keeps the state at each
  segment's boundary and recomputes the segment's forward pass, so memory
  is ``O(T/s + s)`` steps instead of ``O(T)`` for about one more forward
  pass; the gradient is BPTT's.

  >>> import haiku as hk, jax, jax.numpy as jnp, haiku_etp
  >>> model = hk.transform_with_state(lambda x: haiku_etp.MinGRU(4)(x))
  >>> learner = haiku_etp.bptt(model, remat="sqrt")
  >>> xs, ys = jnp.ones((16, 2, 3)), jnp.zeros((16, 2, 4))
  >>> params, state = learner.init(jax.random.PRNGKey(0), xs[0])
  >>> loss = lambda out, y: jnp.mean((out - y) ** 2)
  >>> result = learner.sequence_grad(loss)(params, state, None, xs, ys)
  >>> result.losses.shape
  (16,)

  Args:
    model: a ``hk.transform_with_state`` step.
    remat: ``None`` (store every step), ``"sqrt"`` (or ``True``): segments
      of ``ceil(sqrt(T))`` steps for a window of ``T``, or an int: steps per
      segment.

  Returns:
    A :class:`Learner`.

  Raises:
    ValueError: for a ``remat`` that is none of these.
  """
  return build_learner(model, None, "bptt", remat=remat)


def tbptt(model: hk.TransformedWithState, window: int) -> Learner:
  """Truncated BPTT: BPTT inside windows of ``window`` steps, no traces.

  ``sequence_grad``'s default window is ``window``; every path across a
  window's boundary is cut (the baseline the online learners improve on).

  Args:
    model: a ``hk.transform_with_state`` step.
    window: the truncation, an int >= 1.

  Returns:
    A :class:`Learner` named ``"tbptt"``.
  """
  check_window(window)
  if window is None:
    raise ValueError("tbptt needs a window (an int >= 1); bptt has none.")
  return build_learner(model, None, "tbptt", window=window)


def from_algorithm(
    model: hk.TransformedWithState,
    algorithm: protocol.TraceAlgorithm,
    *,
    trace_dtype: Optional[Any] = None,
) -> Learner:
  """A learner from any :class:`~haiku_etp.extend.TraceAlgorithm`.

  The driver (compile cache, state layout, checks, window form, online
  loop, fused form) is the one every built-in learner uses; the learner's
  name and state key come from ``algorithm.name``. ``docs/design.md``, "The
  learner protocol", shows a complete one.

  Args:
    model: a ``hk.transform_with_state`` step.
    algorithm: a trace algorithm (``haiku_etp.extend.TraceAlgorithm``).
    trace_dtype: ``None``, or the dtype its floating traces are stored in
      between steps (see :func:`d_rtrl`).

  Returns:
    A :class:`Learner`.

  Raises:
    TypeError: if ``algorithm`` lacks a member of the protocol.
  """
  return build_learner(
      model, algorithm, algorithm.name, trace_dtype=trace_dtype
  )
