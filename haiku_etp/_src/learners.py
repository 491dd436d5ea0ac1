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
r"""Online learners (D-RTRL, ES-D-RTRL) and the BPTT reference.

Every learner computes gradients in the *window form*: for a window of ``k``
steps entered with hidden state ``h^e``,

.. math::
  \nabla_\theta L_\mathrm{win} = \frac{\partial L_\mathrm{win}}{\partial
  \theta}\Big|_{h^e\ \mathrm{fixed}} + \mathrm{contract}\Bigl(\epsilon^e,
  \frac{\partial L_\mathrm{win}}{\partial h^e}\Bigr),

then rolls the traces through the ``k`` steps. The first term is one VJP of
the window (exact for readouts and same-step chains); the second is the
trace contraction. BPTT has no traces: with a window covering the whole
sequence it is the exact reference, with a shorter one it is truncated BPTT.

Traces live in the Haiku state under the top-level entries ``~etp/d_rtrl``
and ``~etp/es_d_rtrl``, keyed by parameter path and group name.
"""

from typing import Any, Callable, Optional, Sequence, Union

import haiku as hk
import jax
from jax import lax
from jax import tree_util
import jax.numpy as jnp
import numpy as np

from haiku_etp._src import compiler as compiler_lib
from haiku_etp._src import jacobians as jacobians_lib
from haiku_etp._src import primitive
from haiku_etp._src import sequence
from haiku_etp._src import state as state_lib

DRTRL_KEY = state_lib.LEARNER_PREFIX + "/d_rtrl"
ES_KEY = state_lib.LEARNER_PREFIX + "/es_d_rtrl"


def _aval(shape, dtype):
  return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _relation_avals(compiled, r, g):
  """``(x_aval, y_aval, weight_avals)`` of relation ``r`` as group ``g`` sees it."""
  rel = compiled.relations[r]
  program = compiled.program
  node = program.nodes[rel.node]
  xi = rel.primitive.x_invar_index
  x_aval = None
  if xi is not None:
    a = program.aval(node.ins[xi])
    x_aval = _aval(a.shape, a.dtype)
  y = program.aval(node.outs[0])
  shape = compiled.groups[g].shape if xi is None else y.shape
  weights = {}
  for k, i in rel.primitive.trainable_invars(rel.params).items():
    a = program.aval(node.ins[i])
    weights[k] = _aval(a.shape, a.dtype)
  return x_aval, _aval(shape, y.dtype), weights


def _signature(tree):
  """Hashable structure, shapes and dtypes of ``tree`` (a cache key)."""
  leaves, treedef = tree_util.tree_flatten(tree)
  return treedef, tuple((np.shape(l), jnp.result_type(l)) for l in leaves)


def _mismatch(got: dict, want: dict) -> str:
  """What differs between two ``{name: (shape, dtype)}`` tables."""
  missing = sorted(set(want) - set(got))
  extra = sorted(set(got) - set(want))
  changed = sorted(k for k in set(got) & set(want) if got[k] != want[k])
  parts = [
      f"missing {missing}" if missing else "",
      f"unexpected {extra}" if extra else "",
      ", ".join(
          f"{k} is {got[k][0]} {got[k][1]}, expected {want[k][0]} "
          f"{want[k][1]}"
          for k in changed
      ),
  ]
  return "; ".join(p for p in parts if p)


def _table(entries, nested: bool = False) -> dict:
  """``{name: (shape, dtype)}`` of flat entries or of ``{module: entries}``."""
  if not nested:
    return {
        k: (tuple(np.shape(v)), jnp.dtype(jnp.result_type(v)))
        for k, v in entries.items()
    }
  return {
      f"{m}/{k}": shape_dtype
      for m, e in entries.items()
      for k, shape_dtype in _table(e).items()
  }


def _label(rel, key, group_name):
  suffix = (
      rel.name[len(rel.weights[next(iter(rel.weights))][0]) :]
      if rel.weights
      else ""
  )
  return f"{rel.weights[key][0]}{suffix}@{group_name}"


class _TraceAlgorithm:
  """What the online algorithms share: their traces restart from zeros."""

  def reset(self, entries):
    return {k: jnp.zeros_like(v) for k, v in entries.items()}


class _DRTRL(_TraceAlgorithm):
  """Parameter-dimension traces, one per relation and group."""

  name = "d_rtrl"
  key = DRTRL_KEY

  def __init__(self, fast: bool = True):
    self.fast = fast

  def init(self, compiled) -> dict:
    entries = {}
    for r, rel in enumerate(compiled.relations):
      for g in rel.groups:
        trace = primitive.drtrl_init(
            rel.primitive,
            *_relation_avals(compiled, r, g),
            compiled.groups[g].num_states,
            rel.params,
        )
        for k, v in trace.items():
          entries[_label(rel, k, compiled.groups[g].name)] = v
    return entries

  def _trace(self, compiled, entries, rel, g):
    name = compiled.groups[g].name
    return {k: entries[_label(rel, k, name)] for k in rel.weights}

  def roll(self, compiled, entries, record, weights) -> dict:
    new = dict(entries)
    for r, rel in enumerate(compiled.relations):
      for n, g in enumerate(rel.groups):
        trace = primitive.drtrl_update(
            rel.primitive,
            self._trace(compiled, entries, rel, g),
            record.d[g],
            record.d_f[r][n],
            record.x[r],
            weights[r],
            rel.params,
            fast=self.fast,
        )
        for k, v in trace.items():
          new[_label(rel, k, compiled.groups[g].name)] = v
    return new

  def solve(self, compiled, entries, signals, weights) -> list:
    out = []
    for r, rel in enumerate(compiled.relations):
      total = {k: jnp.zeros_like(v) for k, v in weights[r].items()}
      for g in rel.groups:
        part = primitive.drtrl_solve(
            rel.primitive,
            self._trace(compiled, entries, rel, g),
            signals[g],
            weights[r],
            rel.params,
            fast=self.fast,
        )
        total = {k: total[k] + part[k].astype(total[k].dtype) for k in total}
      out.append(total)
    return out


def parse_decay(decay) -> tuple[float, float]:
  """``(alpha_x, alpha_f)`` from a float, a pair or an int rank.

  An int rank ``n >= 1`` gives the decay whose exponential window has the
  same centre of mass as ``n`` equal steps: ``alpha = (n - 1) / (n + 1)``.
  """
  if isinstance(decay, bool):
    raise ValueError(f"decay must be a float, a pair or an int, got {decay!r}.")
  if isinstance(decay, (int, np.integer)):
    if decay < 1:
      raise ValueError(f"An int decay is a rank and must be >= 1, got {decay}.")
    a = (decay - 1) / (decay + 1)
    return float(a), float(a)
  if isinstance(decay, (float, np.floating)):
    pair = (float(decay), float(decay))
  elif isinstance(decay, (tuple, list)) and len(decay) == 2:
    pair = (float(decay[0]), float(decay[1]))
  else:
    raise ValueError(
        f"decay must be a float, an (alpha_x, alpha_f) pair or an int rank, "
        f"got {decay!r}."
    )
  for a in pair:
    if not 0.0 <= a < 1.0 or not np.isfinite(a):
      raise ValueError(f"Decays must lie in [0, 1), got {decay!r}.")
  return pair


class _ESDRTRL(_TraceAlgorithm):
  """Input-side and output-side traces (pp-prop)."""

  name = "es_d_rtrl"
  key = ES_KEY

  def __init__(self, decay):
    self.alpha_x, self.alpha_f = parse_decay(decay)

  def init(self, compiled) -> dict:
    entries = {}
    dtype = compiled.groups[0].dtype
    for r, rel in enumerate(compiled.relations):
      if not rel.groups:
        continue
      x_aval = _relation_avals(compiled, r, rel.groups[0])[0]
      if x_aval is not None:
        entries[f"x:{rel.name}"] = jnp.zeros(x_aval.shape, x_aval.dtype)
      for g in rel.groups:
        entries[f"f:{rel.name}@{compiled.groups[g].name}"] = primitive.pp_init(
            rel.primitive,
            *_relation_avals(compiled, r, g),
            compiled.groups[g].num_states,
            rel.params,
        )
    entries["one"] = jnp.zeros((), dtype)
    entries["steps"] = jnp.zeros((), jnp.int32)
    return entries

  def roll(self, compiled, entries, record, weights) -> dict:
    ax, af = self.alpha_x, self.alpha_f
    new = dict(entries)
    for r, rel in enumerate(compiled.relations):
      if not rel.groups:
        continue
      if record.x[r] is not None:
        key = f"x:{rel.name}"
        new[key] = ax * entries[key] + record.x[r].astype(entries[key].dtype)
      for n, g in enumerate(rel.groups):
        key = f"f:{rel.name}@{compiled.groups[g].name}"
        f = entries[key]
        d_f = record.d_f[r][n].astype(f.dtype)
        if af == 0.0:
          new[key] = d_f
        else:
          mixed = primitive.mix_states(record.d[g].astype(f.dtype), f)
          new[key] = af * mixed + (1.0 - af) * d_f
    new["one"] = ax * entries["one"] + 1.0
    new["steps"] = entries["steps"] + 1
    return new

  def solve(self, compiled, entries, signals, weights) -> list:
    steps = entries["steps"]
    dtype = entries["one"].dtype
    correction = jnp.where(
        steps > 0, 1.0 - jnp.asarray(self.alpha_f, dtype) ** steps, 1.0
    ).astype(dtype)
    out = []
    for r, rel in enumerate(compiled.relations):
      total = {k: jnp.zeros_like(v) for k, v in weights[r].items()}
      x_trace = entries.get(f"x:{rel.name}")
      for g in rel.groups:
        part = primitive.pp_solve(
            rel.primitive,
            x_trace,
            entries["one"],
            entries[f"f:{rel.name}@{compiled.groups[g].name}"],
            signals[g],
            weights[r],
            rel.params,
            correction,
        )
        total = {k: total[k] + part[k].astype(total[k].dtype) for k in total}
      out.append(total)
    return out


class _BPTT:
  name = "bptt"
  key = None


LossFn = Callable[..., Any]


class Learner:
  """Trains a ``hk.transform_with_state`` step with one gradient algorithm.

  Build it with :func:`d_rtrl`, :func:`es_d_rtrl` or :func:`bptt`. All
  methods are pure and jittable; the learner's state is the model's Haiku
  state plus the trace entries.
  """

  def __init__(self, model: hk.TransformedWithState, algorithm, name: str):
    if not isinstance(model, hk.TransformedWithState):
      raise TypeError(
          "Learners take an hk.transform_with_state model, got "
          f"{type(model).__name__}."
      )
    self.model = model
    self.algorithm = algorithm
    self.name = name
    self._cache = {}
    self._checked = set()
    self._trace_tables = {}
    self._last = None

  @property
  def online(self) -> bool:
    return self.algorithm.key is not None

  # Compilation -------------------------------------------------------------

  def compile(self, params, state, rng, x) -> compiler_lib.CompiledStep:
    """Compiles (and caches) the step for these argument shapes."""
    model_state, _ = state_lib.split_learner_state(state)
    key = _signature((params, model_state, rng, x))
    if key not in self._cache:
      self._check_model_state(params, model_state, x)
      self._cache[key] = compiler_lib.compile_step(
          self.model, params, model_state, rng, x
      )
    self._last = self._cache[key]
    return self._last

  def _check_model_state(self, params, model_state, x):
    """Raises if params or model state do not fit what ``model.init`` makes."""
    key = jax.random.PRNGKey(0)
    expected_params, expected_state = jax.eval_shape(self.model.init, key, x)
    for what, got, want in (
        ("params", params, expected_params),
        ("state", model_state, expected_state),
    ):
      detail = _mismatch(_table(got, nested=True), _table(want, nested=True))
      if detail:
        raise ValueError(
            f"The {what} structure does not match what the model builds for "
            f"an input of shape {jax.tree_util.tree_map(np.shape, x)}: "
            f"{detail}."
        )

  def _check_traces(self, compiled, trace) -> None:
    """Raises if the trace entries do not fit the compiled step."""
    if not self.online:
      return
    if id(compiled) not in self._trace_tables:
      want = jax.eval_shape(lambda: self.algorithm.init(compiled))
      self._trace_tables[id(compiled)] = _table(want)
    detail = _mismatch(_table(trace), self._trace_tables[id(compiled)])
    if detail:
      raise ValueError(
          f"The {self.name} trace entries (state[{self.algorithm.key!r}]) "
          f"do not match the compiled step: {detail}. Build the state with "
          "learner.init or learner.init_state."
      )

  def init(self, rng, x0):
    """Initialises ``(params, state)``; the state includes zero traces.

    Args:
      rng: rng for ``model.init`` (also used to compile the step).
      x0: an example input of one step (batch first).

    Returns:
      ``(params, state)``.
    """
    params, model_state = self.model.init(rng, x0)
    return params, self.init_state(params, model_state, rng, x0)

  def init_state(self, params, model_state, rng, x0):
    """Adds zero traces to an existing model state."""
    state = {m: dict(e) for m, e in model_state.items()}
    if self.online:
      compiled = self.compile(params, state, rng, x0)
      state[self.algorithm.key] = self.algorithm.init(compiled)
    elif not state_lib.hidden_paths(state):
      raise compiler_lib.CompileError(
          "The step declares no hidden state. Keep recurrent memory with "
          "haiku_etp.get_hidden_state / set_hidden_state."
      )
    return state

  def traces(self, state) -> dict:
    """The trace leaves of ``state`` by readable label."""
    if not self.online:
      return {}
    return dict(state.get(self.algorithm.key, {}))

  def report(self, params=None, state=None, rng=None, x=None) -> str:
    """Prints and returns the compiler's report (groups, relations, traces).

    With no arguments it reports the step compiled last.
    """
    if params is not None:
      compiled = self.compile(params, state, rng, x)
    elif self._last is not None:
      compiled = self._last
    else:
      raise ValueError(
          "Nothing compiled yet: call init, or pass (params, state, rng, x)."
      )
    traces = None
    if self.online:
      traces = jax.eval_shape(lambda: self.algorithm.init(compiled))
    text = f"learner: {self.name}\n" + compiled.report(traces)
    print(text, end="")
    return text

  # Stepping ----------------------------------------------------------------

  def _split(self, state):
    model_state, entries = state_lib.split_learner_state(state)
    trace = entries.get(self.algorithm.key, {}) if self.online else {}
    return model_state, trace

  def _join(self, model_state, trace):
    state = {m: dict(e) for m, e in model_state.items()}
    if self.online:
      state[self.algorithm.key] = dict(trace)
    return state

  def apply(self, params, state, rng, x):
    """One forward step; online learners also roll their traces.

    Returns:
      ``(out, state)``.
    """
    model_state, trace = self._split(state)
    if not self.online:
      out, model_state = self.model.apply(params, model_state, rng, x)
      return out, self._join(model_state, trace)
    compiled = self.compile(params, model_state, rng, x)
    self._check_traces(compiled, trace)
    out, model_state, record = jacobians_lib.run_step(
        compiled, params, model_state, rng, x
    )
    weights = jacobians_lib.relation_weights(compiled, params)
    trace = self.algorithm.roll(compiled, trace, record, weights)
    return out, self._join(model_state, trace)

  def evolve(self, params, state, rng, x):
    """Advances the model with no gradient; traces restart from zero.

    The steps taken by ``evolve`` are outside every later gradient (a
    burn-in), so the traces, which would describe them, are zeroed.

    Returns:
      ``(out, state)``.
    """
    model_state, trace = self._split(state)
    out, model_state = self.model.apply(params, model_state, rng, x)
    if self.online:
      trace = self.algorithm.reset(trace)
    return lax.stop_gradient(out), self._join(model_state, trace)

  def reset(self, state, initial=None):
    """Zeroes hidden state and traces between sequences.

    Args:
      state: a learner state.
      initial: optional state (e.g. from ``init``) whose hidden values are
        used instead of zeros.

    Returns:
      The reset state; ordinary (non-hidden) state is kept.
    """
    model_state, trace = self._split(state)
    if initial is None:
      model_state = state_lib.map_hidden(jnp.zeros_like, model_state)
    else:
      init_model, _ = state_lib.split_learner_state(initial)
      model_state = {
          m: {
              n: (init_model[m][n] if state_lib.is_hidden_name(n) else v)
              for n, v in e.items()
          }
          for m, e in model_state.items()
      }
    if self.online:
      trace = self.algorithm.reset(trace)
    return self._join(model_state, trace)

  # Gradients ---------------------------------------------------------------

  def window_grad(
      self,
      loss_fn: LossFn,
      params,
      state,
      rngs,
      xs,
      ys,
      step_weights,
      sample_masks=None,
      *,
      has_aux: bool = False,
  ):
    """Gradient of one window of ``k`` steps (time-major inputs).

    Args:
      loss_fn: ``loss_fn(out_t, y_t)`` (or ``(out_t, y_t, mask_t)`` when
        ``sample_masks`` is given) returning a scalar, or ``(scalar, aux)``.
      params: parameters.
      state: learner state at the window's entry.
      rngs: per-step rngs stacked on a leading ``k`` axis, or ``None``.
      xs: inputs ``(k, ...)``.
      ys: targets ``(k, ...)``.
      step_weights: ``(k,)`` weights of the step losses.
      sample_masks: optional ``(k, B)`` masks passed to ``loss_fn``.
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

    Returns:
      ``(grads, state, losses, auxes)`` with per-step ``losses`` ``(k,)``.
    """
    model_state, trace = self._split(state)
    k = tree_util.tree_leaves(xs)[0].shape[0]
    first = lambda t: tree_util.tree_map(lambda v: v[0], t)
    rng0 = None if rngs is None else first(rngs)
    compiled = None
    if self.online:
      compiled = self.compile(params, model_state, rng0, first(xs))
      self._check_traces(compiled, trace)
    else:
      key = _signature((params, model_state, first(xs)))
      if key not in self._checked:
        self._check_model_state(params, model_state, first(xs))
        self._checked.add(key)
    hidden_index = [
        (m, n)
        for m, n, _ in state_lib.iter_state(model_state)
        if state_lib.is_hidden_name(n)
    ]

    def with_hidden(h):
      st = {m: dict(e) for m, e in model_state.items()}
      for (m, n), v in zip(hidden_index, h):
        st[m][n] = v
      return st

    def one_step(p, st, rng_t, x_t, y_t, w_t, m_t):
      if self.online:
        out, st, rec = jacobians_lib.run_step(compiled, p, st, rng_t, x_t)
      else:
        out, st = self.model.apply(p, st, rng_t, x_t)
        rec = None
      res = loss_fn(out, y_t) if m_t is None else loss_fn(out, y_t, m_t)
      loss, aux = res if has_aux else (res, None)
      loss = jnp.asarray(loss)
      if loss.shape != ():
        raise ValueError(
            f"loss_fn must return a scalar, got shape {loss.shape}."
        )
      return st, (loss * w_t, aux, rec)

    def run(p, h):
      st = with_hidden(h)
      if k == 1:
        st, outs = one_step(
            p,
            st,
            rng0,
            first(xs),
            first(ys),
            step_weights[0],
            None if sample_masks is None else sample_masks[0],
        )
        outs = tree_util.tree_map(lambda v: v[None], outs)
      else:
        body = lambda st, inp: one_step(p, st, *inp)
        st, outs = lax.scan(
            body, st, (rngs, xs, ys, step_weights, sample_masks)
        )
      losses, auxes, recs = outs
      return jnp.sum(losses), (losses, auxes, recs, st)

    h_e = [model_state[m][n] for m, n in hidden_index]
    _, vjp, (losses, auxes, recs, new_model_state) = jax.vjp(
        run, params, h_e, has_aux=True
    )
    grads, g_h = vjp(jnp.ones((), losses.dtype))
    if self.online:
      weights, pull = jax.vjp(
          lambda p: jacobians_lib.relation_weights(compiled, p), params
      )
      pos = {path: i for i, path in enumerate(hidden_index)}
      signals = []
      for g in range(len(compiled.groups)):
        leaves = [
            g_h[pos[compiled.state_paths[leaf]]]
            for leaf in compiled.group_leaves(g)
        ]
        signals.append(jnp.stack(leaves, axis=-1))
      dws = self.algorithm.solve(compiled, trace, signals, weights)
      (extra,) = pull(dws)
      grads = tree_util.tree_map(
          lambda a, b: a + b.astype(a.dtype), grads, extra
      )
      roll = lambda tr, rec: (
          self.algorithm.roll(compiled, tr, rec, weights),
          None,
      )
      if k == 1:
        trace, _ = roll(trace, first(recs))
      else:
        trace, _ = lax.scan(roll, trace, recs)
    return grads, self._join(new_model_state, trace), losses, auxes

  def value_and_grad(
      self,
      loss_fn: LossFn,
      *,
      has_aux: bool = False,
      axis_name: Optional[str] = None,
      check_finite: bool = False,
  ):
    """One online step: ``fn(params, state, rng, x_t, y_t)``.

    Returns ``(loss, grads, state)`` (``((loss, aux), grads, state)`` with
    ``has_aux``). ``grads`` has the structure of ``params``; with
    ``axis_name`` the loss and grads are ``pmean``-ed over that axis. For
    BPTT this is the one-step (truncated) gradient. ``check_finite=True``
    raises ``FloatingPointError`` at run time on NaN or inf in the inputs,
    the loss or the gradients.
    """

    def fn(params, state, rng, x_t, y_t):
      add = lambda t: tree_util.tree_map(lambda v: v[None], t)
      rngs = None if rng is None else add(rng)
      w = jnp.ones((1,), jnp.result_type(float))
      grads, state, losses, auxes = self.window_grad(
          loss_fn, params, state, rngs, add(x_t), add(y_t), w, has_aux=has_aux
      )
      loss = losses[0]
      if axis_name is not None:
        grads = lax.pmean(grads, axis_name)
        loss = lax.pmean(loss, axis_name)
      if check_finite:
        sequence.check_all_finite(
            {"inputs": (x_t, y_t), "loss": loss, "gradients": grads}
        )
      if has_aux:
        return (loss, tree_util.tree_map(lambda v: v[0], auxes)), grads, state
      return loss, grads, state

    return fn

  def sequence_grad(
      self,
      loss_fn: LossFn,
      *,
      window: Optional[int] = "default",
      reduction: str = "sum",
      has_aux: bool = False,
      axis_name: Optional[str] = None,
      check_finite: bool = False,
  ):
    """Gradient over a whole sequence; see :func:`haiku_etp.sequence_grad`."""
    if window == "default":
      window = 1 if self.online else None
    return sequence.sequence_grad(
        self,
        loss_fn,
        window=window,
        reduction=reduction,
        has_aux=has_aux,
        axis_name=axis_name,
        check_finite=check_finite,
    )


def d_rtrl(model: hk.TransformedWithState, *, fast: bool = True) -> Learner:
  r"""D-RTRL: exact per-parameter eligibility traces, rolled forward in time.

  .. math::
    \epsilon^t[\dots, a] = \sum_b D^t[\dots, a, b]\, \epsilon^{t-1}[\dots, b]
      + D_f^t[\dots, a] \otimes x^t

  Equals BPTT when every group's transition is per-position and each
  relation's tail is elementwise (leaky integrators, feed-forward LIF/ALIF,
  dense and conv relations). Memory ``O(B |theta| S)``, flat in time.

  Args:
    model: a ``hk.transform_with_state`` step ``x_t -> out_t``.
    fast: use the primitives' closed-form fast paths.

  Returns:
    A :class:`Learner`.

  >>> import haiku as hk, jax, jax.numpy as jnp, haiku_etp
  >>> def step(x):
  ...   w = hk.get_parameter("w", (3, 4), init=jnp.ones)
  ...   v = haiku_etp.get_hidden_state("v", (x.shape[0], 4), x.dtype)
  ...   v = 0.9 * v + haiku_etp.dense(x, w)
  ...   haiku_etp.set_hidden_state("v", v)
  ...   return v
  >>> learner = haiku_etp.d_rtrl(hk.transform_with_state(step))
  >>> params, state = learner.init(None, jnp.ones((2, 3)))
  >>> sorted(state["~etp/d_rtrl"])
  ['~/w@~']
  """
  return Learner(model, _DRTRL(fast=fast), "d_rtrl")


def es_d_rtrl(
    model: hk.TransformedWithState,
    decay: Union[float, Sequence[float], int] = (0.0, 0.0),
) -> Learner:
  r"""ES-D-RTRL: input-side and output-side traces, ``O(B (I + O S))``.

  .. math::
    \epsilon_x^t = \alpha_x \epsilon_x^{t-1} + x^t, \quad
    \epsilon_f^t = \alpha_f D^t \epsilon_f^{t-1} + (1 - \alpha_f) D_f^t

  and the gradient ``xy_to_dw(eps_x, sum_a eps_f[..., a] g[..., a] / c)`` with
  bias correction ``c = 1 - alpha_f ** n`` after ``n`` trace steps. Exact at
  ``T = 1`` and with ``decay = (lambda, 0)`` on a uniform leak
  ``h <- lambda h + op(x)``; an approximation elsewhere.

  Args:
    model: a ``hk.transform_with_state`` step.
    decay: a float ``alpha`` (both decays), an ``(alpha_x, alpha_f)`` pair, or
      an int rank ``n`` (``alpha = (n - 1) / (n + 1)``).

  Returns:
    A :class:`Learner`.

  Raises:
    ValueError: for a decay outside ``[0, 1)`` or a rank below 1.
  """
  return Learner(model, _ESDRTRL(decay), "es_d_rtrl")


def bptt(model: hk.TransformedWithState) -> Learner:
  """Backpropagation through time, the reference.

  ``sequence_grad`` defaults to one window over the whole sequence (exact
  BPTT, memory linear in ``T``); a shorter ``window`` gives truncated BPTT.
  """
  return Learner(model, _BPTT(), "bptt")
