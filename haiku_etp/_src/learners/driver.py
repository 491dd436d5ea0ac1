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
r"""The learner driver: the public :class:`Learner`, the state layout and
the compile cache, around any trace algorithm
(:class:`~haiku_etp._src.learners.algorithms.protocol.TraceAlgorithm`).

A learner is a :class:`Learner`, a NamedTuple of pure functions shaped like
``hk.Transformed`` and ``optax.GradientTransformation``: everything that
changes a result is in the arguments. Gradients come from the algorithm's
form: the window form (:mod:`~haiku_etp._src.learners.forms.window`), its in-place online
loop (:mod:`~haiku_etp._src.learners.forms.online_loop`) or the fused form
(:mod:`~haiku_etp._src.learners.forms.fused`). BPTT has no algorithm and no traces: with a
window covering the sequence it is the exact reference, with a shorter one
truncated BPTT. The factories are in :mod:`~haiku_etp._src.learners.factories`.

The learner state is the model's Haiku state plus top-level entries owned by
the learner: ``"~etp/<algorithm name>"`` (the traces) and
``"~etp/initial"`` (the initial hidden and per-sample state, which
:func:`reset` restores). See ``docs/design.md``.
"""

import collections
import functools
import inspect
import os
import sys
import types
from typing import (
    Any,
    Callable,
    Mapping,
    NamedTuple,
    Optional,
    Protocol,
    TypeVar,
)
import warnings

import haiku as hk
import jax
from jax import lax
from jax import tree_util
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.core import checks
from haiku_etp._src.core import layer_state
from haiku_etp._src.core import state_layout
from haiku_etp._src.compiler import compiler as compiler_lib
from haiku_etp._src.learners.forms import fused as fused_lib
from haiku_etp._src.learners.forms import online_loop
from haiku_etp._src.learners import precision
from haiku_etp._src.learners.algorithms import protocol
from haiku_etp._src.learners.forms import sequence
from haiku_etp._src.core import state as state_lib
from haiku_etp._src.learners.forms import window as window_lib

INITIAL_KEY = state_layout.INITIAL_KEY
_CACHE_SIZE = 16
_T_co = TypeVar("_T_co", covariant=True)


class ApproximationWarning(UserWarning):
  """A learner's gradient is not exact for some parameters of this step.

  Names each approximate parameter and the cut that makes it so. An online
  learner issues it once per input signature when it first compiles the
  step: at ``init`` or ``init_state`` (or whichever call comes first). The
  first call of a gradient function it builds (``sequence_grad``'s or
  ``value_and_grad``'s, when ``jit`` traces it or at its first eager call)
  issues it again if that one went to other warning filters: a
  ``warnings.catch_warnings`` block around ``init`` alone, or one around
  the gradient call alone, sees it. So it comes at most twice per learner
  and signature, never at every call.
  """


class StepResult(NamedTuple):
  """What one online step returns.

  Attributes:
    loss: the step's loss (``pmean``-ed with ``axis_name``).
    grads: gradients with the structure of ``params``.
    state: the learner state after the step.
    aux: the loss's auxiliary output (``None`` without ``has_aux``).
  """

  loss: jax.Array
  grads: Any
  state: Any
  aux: Any = None


class SequenceResult(NamedTuple):
  """What a whole-sequence gradient returns.

  Attributes:
    losses: per-step losses ``(T,)``.
    grads: the summed (or averaged) gradients, structured like ``params``.
    state: the learner state after the sequence.
    aux: per-step auxiliary outputs stacked on a leading ``T`` axis
      (``None`` without ``has_aux``).
  """

  losses: jax.Array
  grads: Any
  state: Any
  aux: Any = None


# --------------------------------------------------------------------------
# The learner's contracts: each field's signature.

# A pytree of arrays (inputs, targets, model outputs, gradients).
PyTree = Any
# ``loss_fn(out_t, y_t) -> loss`` (scalar or per-sample ``(B,)``), or
# ``(loss, aux)`` with ``has_aux``.
LossFn = Callable[[PyTree, PyTree], Any]


class InitFn(Protocol):
  """``init(rng, x0) -> (params, state)``: the model's parameters and the
  learner state (the model's Haiku state plus the learner's entries)."""

  def __call__(
      self, rng: jax.Array, x0: PyTree, /
  ) -> tuple[hk.Params, hk.State]:
    ...


class InitStateFn(Protocol):
  """``init_state(params, model_state, rng, x0) -> state``: the learner's
  entries added to an existing model state."""

  def __call__(
      self,
      params: hk.Params,
      model_state: hk.State,
      rng: jax.Array,
      x0: PyTree,
      /,
  ) -> hk.State:
    ...


class StepFn(Protocol):
  """``fn(params, state, rng, x_t) -> (out_t, state)``: one step forward
  (``apply``, ``evolve``) or, over time-major ``xs``, the whole sequence
  (``unroll``)."""

  def __call__(
      self, params: hk.Params, state: hk.State, rng: jax.Array, x: PyTree, /
  ) -> tuple[PyTree, hk.State]:
    ...


class ResetFn(Protocol):
  """``reset(state, initial=None) -> state``: hidden and per-sample state
  back to their initial values (or ``initial``'s), traces zeroed."""

  def __call__(
      self, state: hk.State, initial: Optional[hk.State] = None, /
  ) -> hk.State:
    ...


class StepGradFn(Protocol):
  """``fn(params, state, rng, x_t, y_t, mask_t=None) -> StepResult``: one
  online step's loss and gradients."""

  def __call__(
      self,
      params: hk.Params,
      state: hk.State,
      rng: jax.Array,
      x_t: PyTree,
      y_t: PyTree,
      mask_t: Optional[jax.Array] = None,
      /,
  ) -> "StepResult":
    ...


class ValueAndGradFn(Protocol):
  """``value_and_grad(loss_fn, *, has_aux, axis_name, check_finite) ->
  StepGradFn``."""

  def __call__(
      self,
      loss_fn: LossFn,
      /,
      *,
      has_aux: bool = False,
      axis_name: Optional[str] = None,
      check_finite: bool = False,
  ) -> StepGradFn:
    ...


class SequenceGradFn(Protocol):
  """``fn(params, state, rng, xs, ys, mask=None) -> SequenceResult``: the
  losses and gradients of a time-major sequence."""

  def __call__(
      self,
      params: hk.Params,
      state: hk.State,
      rng: jax.Array,
      xs: PyTree,
      ys: PyTree,
      mask: Optional[jax.Array] = None,
      /,
  ) -> "SequenceResult":
    ...


class SequenceGradBuilder(Protocol):
  """``sequence_grad(loss_fn, *, window, reduction, has_aux, axis_name,
  check_finite, roll_order) -> SequenceGradFn``."""

  def __call__(
      self,
      loss_fn: LossFn,
      /,
      *,
      window: Optional[int] = None,
      reduction: str = "sum",
      has_aux: bool = False,
      axis_name: Optional[str] = None,
      check_finite: bool = False,
      roll_order: str = "next_step",
  ) -> SequenceGradFn:
    ...


class InspectFn(Protocol[_T_co]):
  """``fn(params, state, rng, x)``: what the learner makes of one step for
  these arguments (``report``: text, ``compile``: the
  :class:`~haiku_etp.compiler.CompiledStep`, ``verdicts``: one
  :class:`~haiku_etp.ParameterVerdict` per parameter); shapes only."""

  def __call__(
      self, params: hk.Params, state: hk.State, rng: jax.Array, x: PyTree, /
  ) -> _T_co:
    ...


class TracesFn(Protocol):
  """``traces(state) -> {label: array}``: the learner's trace entries."""

  def __call__(self, state: hk.State, /) -> protocol.Traces:
    ...


class Learner(NamedTuple):
  """A gradient algorithm for one ``hk.transform_with_state`` step.

  Build it with a factory (``haiku_etp.d_rtrl``, ``es_d_rtrl``, ``rtrl``,
  ``bptt``, ``tbptt``), by name (``haiku_etp.make_learner``) or from any
  trace algorithm (``haiku_etp.extend.from_algorithm``). Every
  function is pure and jittable (``report`` and ``compile`` read shapes
  only); the learner state is the model's Haiku state plus the learner's own
  ``"~etp/..."`` entries.

  Attributes:
    name: the learner's name (``"d_rtrl"``, ``"rtrl"``, ``"bptt"``, ...).
    init: ``init(rng, x0) -> (params, state)``.
    init_state: ``init_state(params, model_state, rng, x0) -> state``: the
      learner entries added to an existing model state.
    apply: ``apply(params, state, rng, x_t) -> (out_t, state)``: one forward
      step; online learners also roll their traces.
    unroll: ``unroll(params, state, rng, xs) -> (outs, state)``: the forward
      pass over time-major ``xs`` without gradients (evaluation, like
      ``hk.dynamic_unroll``); traces restart from zero.
    evolve: ``evolve(params, state, rng, x_t) -> (out_t, state)``: one step
      outside every gradient (a burn-in); traces restart from zero.
    reset: ``reset(state, initial=None) -> state``: hidden and per-sample
      state back to their initial values (or ``initial``'s), traces zeroed.
    value_and_grad: ``value_and_grad(loss_fn, *, has_aux=False,
      axis_name=None, check_finite=False)`` builds ``fn(params, state, rng,
      x_t, y_t, mask_t=None) -> StepResult``, one online step.
    sequence_grad: ``sequence_grad(loss_fn, *, window=None,
      reduction="sum", has_aux=False, axis_name=None, check_finite=False,
      roll_order="next_step")`` builds ``fn(params, state, rng, xs, ys,
      mask=None) -> SequenceResult``. Over one-step windows the traces of
      each step are rolled at the start of the next (``"next_step"``, in
      place) or right after it (``"same_step"``, the window form's order,
      for measurements); the sums are the same.
      ``loss_fn(out_t, y_t)`` returns a scalar or per-sample losses ``(B,)``;
      the learner applies the mask (``(T,)`` step weights or ``(T, B)``
      sample weights), and ``reduction="mean"`` divides by the unmasked
      steps.
    report: ``report(params, state, rng, x) -> str``: the compiler's
      analysis of the step for these arguments, with the traces' bytes.
    traces: ``traces(state) -> dict``: the trace leaves by label.
    compile: ``compile(params, state, rng, x) -> CompiledStep``.
    verdicts: ``verdicts(params, state, rng, x) -> tuple``: one
      :class:`~haiku_etp.ParameterVerdict` per parameter (exact or not,
      and why), what ``report`` prints and the warning names.
  """

  name: str
  init: InitFn
  init_state: InitStateFn
  apply: StepFn
  unroll: StepFn
  evolve: StepFn
  reset: ResetFn
  value_and_grad: ValueAndGradFn
  sequence_grad: SequenceGradBuilder
  report: InspectFn[str]
  traces: TracesFn
  compile: InspectFn[compiler_lib.CompiledStep]
  verdicts: InspectFn[tuple[protocol.ParameterVerdict, ...]]


# --------------------------------------------------------------------------
# The compile cache: bounded, keyed by structure, shapes and dtypes.


def _signature(tree: Any):
  leaves, treedef = tree_util.tree_flatten(tree)
  return treedef, tuple((np.shape(l), jnp.result_type(l)) for l in leaves)


def _table(entries: Mapping[str, Any], nested: bool = False) -> dict:
  """``{name: (shape, dtype)}`` of flat entries or of ``{module: entries}``."""
  if nested:
    return {
        f"{m}/{k}": sd
        for m, e in entries.items()
        for k, sd in _table(e).items()
    }
  return {
      k: (tuple(np.shape(v)), jnp.dtype(jnp.result_type(v)))
      for k, v in entries.items()
  }


def _differences(got: dict, want: dict) -> tuple[list, list, list]:
  """``(missing, unexpected, changed)`` names of two ``{name: (shape,
  dtype)}`` tables."""
  missing = sorted(set(want) - set(got))
  extra = sorted(set(got) - set(want))
  changed = sorted(k for k in set(got) & set(want) if got[k] != want[k])
  return missing, extra, changed


def _mismatch(got: dict, want: dict) -> str:
  """What differs between two ``{name: (shape, dtype)}`` tables."""
  missing, extra, changed = _differences(got, want)
  parts = [
      f"missing {missing}" if missing else "",
      f"unexpected {extra}" if extra else "",
      ", ".join(
          f"{k} is {got[k][0]} {got[k][1]}, expected {want[k][0]} {want[k][1]}"
          for k in changed
      ),
  ]
  return "; ".join(p for p in parts if p)


def _dtype_only(got: dict, want: dict) -> bool:
  """Whether two tables differ in dtypes alone."""
  missing, extra, changed = _differences(got, want)
  return (
      bool(changed)
      and not missing
      and not extra
      and all(got[k][0] == want[k][0] for k in changed)
  )


def _input_dtypes(x: Any) -> list:
  return sorted({str(jnp.result_type(l)) for l in tree_util.tree_leaves(x)})


def _state_batch(model_state: Any) -> Optional[int]:
  """The leading size of the first hidden leaf (the batch), if any."""
  for _, n, v in state_lib.iter_state(model_state):
    if state_lib.is_hidden_name(n) and np.ndim(v):
      return np.shape(v)[0]
  return None


def _time_major_hint(model_state: Any, xs: Any) -> str:
  """A hint for a mismatch met by a sequence ``xs``: the time-major rule."""
  shapes = [np.shape(l) for l in tree_util.tree_leaves(xs)]
  if not shapes or len(shapes[0]) < 2:
    return ""
  hint = (
      f" Sequences are time-major (T, B, ...): xs has shape {shapes[0]}, so "
      f"each step's input has batch {shapes[0][1]}."
  )
  batch = _state_batch(model_state)
  if batch is not None and shapes[0][0] == batch != shapes[0][1]:
    hint += (
        f" Its leading axis has the state's batch ({batch}): if xs is "
        "batch-major (B, T, ...), pass jnp.swapaxes(xs, 0, 1)."
    )
  return hint


class _Entry(NamedTuple):
  compiled: Any
  trace_table: dict


class _Core(NamedTuple):
  """What every learner function closes over (immutable but for the memo)."""

  model: hk.TransformedWithState
  algorithm: Any  # a protocol.TraceAlgorithm, or None for BPTT.
  name: str
  memo: collections.OrderedDict
  warned: collections.OrderedDict  # (place, signature) -> filters it went to
  window: Optional[int] = None  # sequence_grad's default window (tbptt)
  remat: Any = None  # BPTT's gradient checkpointing (segment steps)

  @property
  def online(self) -> bool:
    return self.algorithm is not None

  @property
  def trace_key(self) -> Optional[str]:
    if not self.online:
      return None
    return state_layout.trace_key(self.algorithm.name)


def _check_model_state(
    core: _Core, params: Any, model_state: Any, x: Any, xs: Any = None
) -> None:
  """Raises ``ValueError`` when ``params`` or ``model_state`` are not what
  the model builds for ``x`` (``xs``: the sequence ``x`` came from)."""
  expected = jax.eval_shape(core.model.init, jax.random.PRNGKey(0), x)
  for what, got, want in zip(
      ("params", "state"), (params, model_state), expected
  ):
    got, want = _table(got, nested=True), _table(want, nested=True)
    detail = _mismatch(got, want)
    if not detail:
      continue
    if _dtype_only(got, want):
      changed = _differences(got, want)[2]
      have = "/".join(sorted({str(got[k][1]) for k in changed}))
      builds = "/".join(sorted({str(want[k][1]) for k in changed}))
      raise ValueError(
          f"dtype mismatch: {what} entries are {have} where the model builds "
          f"{builds} for an input of dtype {'/'.join(_input_dtypes(x))} "
          f"({detail}). Feed inputs of the dtype the learner was initialized "
          f"with (cast them, e.g. xs.astype(jnp.{have.split('/')[0]})), or "
          "call learner.init with inputs of the dtype you train with."
      )
    hint = "" if xs is None else _time_major_hint(model_state, xs)
    raise ValueError(
        f"The {what} structure does not match what the model builds for an "
        f"input of shape {tree_util.tree_map(np.shape, x)}: {detail}.{hint} "
        "Use the params and state from learner.init for inputs of this "
        "shape (under pmap, replicate params with haiku_etp.sharding.replicate and "
        "shard the state with haiku_etp.sharding.shard_state)."
    )


def _entry(
    core: _Core,
    params: Any,
    model_state: Any,
    rng: Optional[jax.Array],
    x: Any,
    compile_step=None,
    xs: Any = None,
    gradient=False,
):
  """The memoised compiled step (and checks) for these shapes.

  An online learner announces its approximations (:func:`_announce`) when it
  compiles the step for an input signature and, with ``gradient`` (a
  gradient function's call), at the first such call for that signature.
  """
  key = _signature((params, model_state, rng, x))
  entry = core.memo.get(key)
  if entry is not None and (entry.compiled is not None or not compile_step):
    core.memo.move_to_end(key)
    if gradient and core.online and entry.compiled is not None:
      _announce(core, entry.compiled, x, "gradient")
    return entry
  _check_model_state(core, params, model_state, x, xs)
  compiled, table = None, {}
  if core.online or compile_step:
    compiled = compiler_lib.compile_step(
        core.model,
        params,
        model_state,
        rng,
        x,
        max_cross_bytes=_cross_budget(core),
    )
  if core.online:
    assert compiled is not None and core.algorithm is not None
    shapes = jax.eval_shape(lambda: core.algorithm.init(compiled))
    core.algorithm.check(compiled, shapes)
    table = _table(shapes)
    _announce(core, compiled, x, "compile")
    if gradient:
      _announce(core, compiled, x, "gradient")
  entry = _Entry(compiled, table)
  _remember(core.memo, key, entry)
  return entry


def _remember(memo: collections.OrderedDict, key: Any, value) -> None:
  memo[key] = value
  while len(memo) > _CACHE_SIZE:
    memo.popitem(last=False)


def _cross_budget(core: _Core):
  """The algorithm's budget; BPTT reports D-RTRL's default analysis."""
  if core.algorithm is None:
    return compiler_lib.DEFAULT_CROSS_BYTES
  return core.algorithm.cross_budget


def _verdicts(core: _Core, compiled: compiler_lib.CompiledStep) -> tuple:
  """The learner's per-parameter statement (BPTT: exact over the sequence)."""
  if core.algorithm is None:
    # BPTT over the whole sequence; truncated windows cut every path
    # across their boundaries.
    cut = (
        lambda p: core.window is not None
        and p.role != compiler_lib.ParameterRole.NON_TEMPORAL
    )
    return tuple(
        protocol.verdict(p, ("tbptt_window_cut",) if cut(p) else ())
        for p in compiled.parameters
    )
  return tuple(core.algorithm.verdicts(compiled))


def _approximate(core: _Core, compiled: compiler_lib.CompiledStep) -> list:
  """``(path, reasons)`` of the parameters this learner is approximate for."""
  return [(v.path, v.reasons) for v in _verdicts(core, compiled) if not v.exact]


def _user_stacklevel() -> int:
  """The stack level of the first frame outside haiku_etp, jax and haiku."""
  packages = tuple(
      os.path.dirname(m.__file__ or "") + os.sep
      for m in (jax, hk, sys.modules[__name__.split(".")[0]])
  )
  frame: Optional[types.FrameType] = sys._getframe(1)  # pylint: disable=protected-access
  level = 1
  while frame is not None and frame.f_code.co_filename.startswith(packages):
    frame, level = frame.f_back, level + 1
  return level


def _announce(
    core: _Core, compiled: compiler_lib.CompiledStep, x: Any, place: str
) -> None:
  """Issues the :class:`ApproximationWarning` for input ``x`` at ``place``:
  ``"compile"`` (the step's first compilation for ``x``'s signature, at
  ``init``, ``init_state`` or whichever call comes first) or ``"gradient"``
  (the first call of a gradient function for that signature), once each.

  The gradient call repeats it only when the compile-time warning was issued
  under other warning filters: inside a ``warnings.catch_warnings`` block
  since left (where it may have been ignored or recorded), or outside the
  one the gradient call runs in. Under the same filters the user has seen
  it (or chose not to).
  """
  signature = _signature(x)
  key = (place, signature)
  if key in core.warned:
    return
  _remember(core.warned, key, warnings.filters)
  if place == "gradient":
    seen_under = core.warned.get(("compile", signature))
    if seen_under is warnings.filters:
      return
  _warn_if_approximate(core, compiled, x)


def _warn_if_approximate(
    core: _Core, compiled: compiler_lib.CompiledStep, x: Any
) -> None:
  approximate = _approximate(core, compiled)
  if not approximate:
    return
  lines = "\n".join(f"  {p}: {', '.join(r)}" for p, r in approximate)
  shapes = tree_util.tree_map(np.shape, x)
  note = core.algorithm.note(compiled)
  warnings.warn(
      f"{core.name} gives an approximate gradient for {len(approximate)} of "
      f"{len(compiled.parameters)} parameters of this step (input {shapes}):"
      f"\n{lines}\n{note}learner.report(params, state, rng, x) explains "
      "each reason.",
      ApproximationWarning,
      stacklevel=_user_stacklevel(),
  )


# --------------------------------------------------------------------------
# State layout.


def _check_params(params: Any) -> None:
  if not isinstance(params, dict) and not hasattr(params, "keys"):
    raise TypeError(
        "params must be the parameter mapping from learner.init, got "
        f"{type(params).__name__}."
    )


def _split(core: _Core, state: Any) -> tuple[dict, dict, dict]:
  """``(model_state, traces, extra)`` of a learner state.

  ``extra`` holds the other learner entries (the initial state, a data
  parallel marker), carried through unchanged.
  """
  if not isinstance(state, dict) and not hasattr(state, "keys"):
    raise TypeError(
        "state must be the learner state from learner.init or "
        f"learner.init_state, got {type(state).__name__}."
    )
  model_state, entries = state_lib.split_learner_state(state)
  missing = [k for k in (core.trace_key, INITIAL_KEY) if k and k not in entries]
  if missing:
    raise ValueError(
        f"The state has no {missing} entries: build the {core.name} state "
        "with learner.init or learner.init_state (a plain model state or "
        "another learner's state does not fit)."
    )
  key = core.trace_key
  trace = dict(entries.pop(key)) if key is not None else {}
  return model_state, trace, entries


def _join(core: _Core, model_state: Any, trace: protocol.Traces, extra) -> dict:
  state = {m: dict(e) for m, e in model_state.items()}
  state.update({m: dict(e) for m, e in extra.items()})
  if core.online:
    state[core.trace_key] = dict(trace)
  return state


def _resettable(model_state: Any) -> dict:
  """``{path: value}`` of the hidden and per-sample entries."""
  return {
      state_lib.state_path(m, n): v
      for m, n, v in state_lib.iter_state(model_state)
      if state_lib.is_hidden_name(n) or state_lib.is_sample_name(n)
  }


def _checked_compile(
    core: _Core,
    params: Any,
    state: Any,
    rng: Optional[jax.Array],
    x: Any,
    compile_step=None,
    xs: Any = None,
    gradient=False,
):
  """``(model_state, trace, extra, entry)`` with params and traces checked.

  ``xs`` is the sequence that ``x`` is the first step of, for the messages;
  ``gradient``: the call is a gradient function's (:func:`_entry`).
  """
  _check_params(params)
  model_state, trace, extra = _split(core, state)
  entry = _entry(
      core, params, model_state, rng, x, compile_step, xs, gradient=gradient
  )
  if core.online:
    detail = _mismatch(_table(trace), entry.trace_table)
    if detail:
      raise ValueError(
          f"The {core.name} trace entries (state[{core.trace_key!r}]) do not "
          f"match the compiled step: {detail}. Build the state with "
          "learner.init or learner.init_state for these shapes."
      )
  return model_state, trace, extra, entry


# --------------------------------------------------------------------------
# The learner functions.


def _init(core: _Core, rng: Optional[jax.Array], x0: Any):
  params, model_state = core.model.init(rng, x0)
  return params, _init_state(core, params, model_state, rng, x0, split=False)


def _init_state(
    core: _Core,
    params: Any,
    model_state: Any,
    rng: Optional[jax.Array],
    x0: Any,
    split: bool = True,
):
  _check_params(params)
  model_state = {m: dict(e) for m, e in model_state.items()}
  if split:
    # The model's own init stacks a layer stack's state; keep it per layer.
    stacked = layer_state.stacked_leaves(
        core.model, params, model_state, rng, x0
    )
    model_state = layer_state.split(model_state, stacked)
  if not state_lib.hidden_paths(model_state):
    raise compiler_lib.CompileError(
        "The step declares no hidden state. Keep recurrent memory with "
        "haiku_etp.get_hidden_state / set_hidden_state."
    )
  entry = _entry(core, params, model_state, rng, x0)
  trace = core.algorithm.init(entry.compiled) if core.online else {}
  return _join(
      core, model_state, trace, {INITIAL_KEY: _resettable(model_state)}
  )


def _apply(
    core: _Core, params: Any, state: Any, rng: Optional[jax.Array], x: Any
):
  model_state, trace, extra, entry = _checked_compile(
      core, params, state, rng, x
  )
  if not core.online:
    out, model_state = core.model.apply(params, model_state, rng, x)
    return out, _join(core, model_state, trace, extra)
  compiled, alg = entry.compiled, core.algorithm
  step = window_lib.recording_step_fn(
      compiled, core.model, protocol.step_needs(alg, compiled)
  )
  out, model_state, record = step(params, model_state, rng, x)
  trace = alg.roll(compiled, trace, record, alg.operands(compiled, params))
  return out, _join(core, model_state, trace, extra)


def _evolve(
    core: _Core, params: Any, state: Any, rng: Optional[jax.Array], x: Any
):
  model_state, trace, extra, _ = _checked_compile(core, params, state, rng, x)
  out, model_state = core.model.apply(params, model_state, rng, x)
  trace = state_layout.zeros_like(trace)
  return lax.stop_gradient(out), _join(core, model_state, trace, extra)


def _unroll(
    core: _Core, params: Any, state: Any, rng: Optional[jax.Array], xs: Any
):
  num_steps = sequence.time_length(xs)
  first = tree_util.tree_map(lambda v: v[0], xs)
  rng0 = None if rng is None else jax.random.fold_in(rng, 0)
  model_state, trace, extra, _ = _checked_compile(
      core, params, state, rng0, first, xs=xs
  )

  def body(st, inp):
    rng_t, x_t = inp
    out, st = core.model.apply(params, st, rng_t, x_t)
    return st, out

  rngs = sequence.step_rngs(rng, num_steps)
  model_state, outs = lax.scan(body, model_state, (rngs, xs))
  trace = state_layout.zeros_like(trace)
  return lax.stop_gradient(outs), _join(core, model_state, trace, extra)


def _reset(core: _Core, state: Any, initial: Any = None):
  model_state, trace, extra = _split(core, state)
  stored = extra[INITIAL_KEY]
  values = stored
  if initial is not None:
    values = _resettable(state_lib.split_learner_state(initial)[0])
    detail = _mismatch(_table(values), _table(stored))
    if detail:
      raise ValueError(
          "initial does not hold the hidden and per-sample state of this "
          f"model: {detail}. Pass a state built by this learner's init (or "
          "the model's init) for the same shapes."
      )
  model_state = {
      m: {
          n: values.get(state_lib.state_path(m, n), v)
          if state_lib.is_hidden_name(n) or state_lib.is_sample_name(n)
          else v
          for n, v in e.items()
      }
      for m, e in model_state.items()
  }
  return _join(core, model_state, state_layout.zeros_like(trace), extra)


def _traces(core: _Core, state: Any) -> dict:
  if not core.online:
    return {}
  return dict(state.get(core.trace_key, {}))


def _compile(
    core: _Core, params: Any, state: Any, rng: Optional[jax.Array], x: Any
):
  model_state, _ = state_lib.split_learner_state(state)
  _check_params(params)
  return _entry(core, params, model_state, rng, x, compile_step=True).compiled


def _learner_verdicts(
    core: _Core, params: Any, state: Any, rng: Optional[jax.Array], x: Any
) -> tuple:
  return _verdicts(core, _compile(core, params, state, rng, x))


def _window_roll_text(forms) -> str:
  """``report``'s lines on how a window of ``k > 1`` steps rolls the
  traces (``window_forms``: ``(what, form, why)``)."""
  head = "window roll (sequence_grad with window > 1): "
  slow = [(what, form, why) for what, form, why in forms if form != "closed"]
  if not slow:
    return head + "closed form for every trace (once per window)"
  reasons = {why for _, form, why in slow if form == "per_step"}
  if len(slow) == len(forms) and len(reasons) == 1:
    return head + f"step by step for every trace ({reasons.pop()})"
  lines = [head + "closed form except"]
  for what, form, why in slow:
    how = "step by step" if form == "per_step" else "instantaneous terms summed"
    lines.append(f"  {what}: {how} ({why})")
  return "\n".join(lines)


def _plans_no_cross_traces(core: _Core) -> bool:
  """Whether the learner compiles with no cross-group budget although no
  ``max_cross_bytes=0`` asked for it (ES-D-RTRL, SnAp, UORO, full RTRL):
  its compiled step is then not D-RTRL's analysis."""
  alg = core.algorithm
  return (
      alg is not None
      and alg.cross_budget == 0
      and getattr(alg, "max_cross_bytes", None) != 0
  )


def _report_drtrl(
    core: _Core,
    params: Any,
    state: Any,
    rng: Optional[jax.Array],
    x: Any,
    compiled: compiler_lib.CompiledStep,
) -> dict:
  """``compiled.report``'s ``diagnostics`` and ``drtrl`` for a learner
  that plans no cross-group traces: D-RTRL's budget warnings are not its,
  and the closing D-RTRL verdict is D-RTRL's at its own budget."""
  if not _plans_no_cross_traces(core):
    return {}
  budget = getattr(
      core.algorithm, "max_cross_bytes", compiler_lib.DEFAULT_CROSS_BYTES
  )
  model_state, _ = state_lib.split_learner_state(state)
  drtrl = compiler_lib.compile_step(
      core.model, params, model_state, rng, x, max_cross_bytes=budget
  )
  verdict = "exact" if drtrl.drtrl_exact else "approximate"
  if not drtrl.drtrl_exact:
    how = "d_rtrl(model).report(...) says why"
  elif compiled.drtrl_exact:
    how = ""
  else:
    how = f"with its cross-group traces, which {core.name} does not keep"
  return dict(
      diagnostics=[
          d for d in compiled.diagnostics if d.code != "cross_trace_over_budget"
      ],
      drtrl=verdict + (f" ({how})" if how else ""),
  )


def _report(
    core: _Core, params: Any, state: Any, rng: Optional[jax.Array], x: Any
) -> str:
  compiled = _compile(core, params, state, rng, x)
  traces = None
  if core.online:
    traces = jax.eval_shape(lambda: core.algorithm.init(compiled))
  verdicts = _verdicts(core, compiled)
  text = compiled.report(
      traces,
      verdicts,
      **_report_drtrl(core, params, state, rng, x, compiled),
  )
  note = core.algorithm.note(compiled) if core.online else ""
  if note and any(not v.exact for v in verdicts):
    text += f"{core.name}'s approximations: {note.strip()}\n"
  forms = getattr(core.algorithm, "window_forms", None)
  if core.online and forms is not None:
    text += "\n" + _window_roll_text(forms(compiled))
  if core.remat is not None:
    segment = (
        "ceil(sqrt(T)) steps"
        if core.remat is True or core.remat == "sqrt"
        else f"{core.remat} steps"
    )
    text += (
        f"\ngradient checkpointing: segments of {segment}; the backward "
        "pass stores the state at each segment boundary and one segment's "
        "steps, and recomputes each segment's forward pass once (memory "
        "O(T/s + s) steps instead of O(T); about one more forward pass)."
    )
  approximate = _approximate(core, compiled)
  verdict = (
      "exact for every parameter"
      if not approximate
      else f"approximate for {[p for p, _ in approximate]}"
  )
  return f"learner: {core.name} ({verdict})\n{text}"


# --------------------------------------------------------------------------
# Gradients.


def _form(core: _Core):
  """The gradient form of the learner's algorithm (BPTT: the window)."""
  if core.algorithm is not None and core.algorithm.form == "fused":
    return fused_lib
  return window_lib


def _run_form(
    form,
    core: _Core,
    loss_fn: Callable[..., Any],
    has_aux: bool,
    params: Any,
    state: Any,
    inputs: Any,
):
  """``form(problem, ...)`` on the split state, joined back:
  ``(grads, state, losses, aux)``."""
  model_state, trace, extra, entry = _checked_compile(
      core,
      params,
      state,
      sequence.first_step(inputs[0]),
      sequence.first_step(inputs[1]),
  )
  problem = window_lib.Problem(
      entry.compiled, core.algorithm, core.model, loss_fn, has_aux, core.remat
  )
  grads, model_state, trace, losses, aux = form(
      problem, params, model_state, trace, inputs
  )
  return grads, _join(core, model_state, trace, extra), losses, aux


def _window(
    core: _Core,
    loss_fn: Callable[..., Any],
    has_aux: bool,
    params: Any,
    state: Any,
    inputs: Any,
):
  """One window's ``(grads, state, losses, aux)``; ``inputs`` are k-leading."""
  return _run_form(
      _form(core).gradient, core, loss_fn, has_aux, params, state, inputs
  )


def _value_and_grad(
    core: _Core,
    loss_fn: Callable[..., Any],
    *,
    has_aux: bool = False,
    axis_name: Optional[str] = None,
    check_finite: bool = False,
):
  sequence.check_loss_signature(loss_fn)

  def fn(
      params: Any,
      state: Any,
      rng: Optional[jax.Array],
      x_t: Any,
      y_t: Any,
      mask_t: Optional[jax.Array] = None,
  ):
    batch = _input_batch(core, state, x_t, 0)
    sequence.check_batch(y_t, batch, "y_t", 0)
    if mask_t is not None:
      mask_t = jnp.asarray(mask_t)
      message = (
          "mask_t must be a scalar or have shape "
          f"({'B' if batch is None else batch},), got {mask_t.shape}."
      )
      checks.assert_rank(mask_t, {0, 1}, custom_message=message)
      if mask_t.ndim == 1:
        checks.assert_shape(
            mask_t,
            (batch,),
            custom_message=message,
        )
    _checked_compile(core, params, state, rng, x_t, gradient=True)
    add = (
        lambda t: None
        if t is None
        else tree_util.tree_map(lambda v: jnp.asarray(v)[None], t)
    )
    inputs = (add(rng), add(x_t), add(y_t), add(mask_t))
    grads, state, losses, aux = _window(
        core, loss_fn, has_aux, params, state, inputs
    )
    loss = losses[0]
    if axis_name is not None:
      grads, loss = lax.pmean((grads, loss), axis_name)
    aux = None if aux is None else tree_util.tree_map(lambda v: v[0], aux)
    return StepResult(loss, grads, state, aux)

  if not check_finite:
    return fn
  roles = lambda args, res: {
      "params": args[0],
      "x_t": args[3],
      "y_t": args[4],
      "loss": res.loss,
      "grads": res.grads,
  }
  return sequence.checked(fn, roles)


def _input_batch(core: _Core, state: Any, x: Any, axis: int) -> Optional[int]:
  """The batch of the inputs ``x`` (along ``axis``) when it is the state's.

  ``None`` when they disagree (the state checks then name the mismatch) or
  the model is not batched, so the targets are checked only against a
  batch that the inputs and the hidden state agree on.
  """
  batch = sequence.batch_size(x, axis)
  model_state, _, _ = _split(core, state)
  return batch if batch == _state_batch(model_state) else None


def check_window(window: Optional[int]) -> None:
  """Raises a ``ValueError`` unless ``window`` is ``None`` or a positive int."""
  if window is not None and (
      isinstance(window, bool) or not isinstance(window, int) or window < 1
  ):
    raise ValueError(
        f"window must be an int >= 1 or None (the learner's default), got "
        f"{window!r}."
    )


def _sequence_grad(
    core: _Core,
    loss_fn: Callable[..., Any],
    *,
    window: Optional[int] = None,
    reduction: str = "sum",
    has_aux: bool = False,
    axis_name: Optional[str] = None,
    check_finite: bool = False,
    roll_order: str = "next_step",
):
  check_window(window)
  online_loop.check_order(roll_order)
  if reduction not in ("sum", "mean"):
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")

  sequence.check_loss_signature(loss_fn)

  def fn(
      params: Any,
      state: Any,
      rng: Optional[jax.Array],
      xs: Any,
      ys: Any,
      mask: Optional[jax.Array] = None,
  ):
    num_steps = sequence.time_length(xs, "xs")
    if sequence.time_length(ys, "ys") != num_steps:
      raise ValueError(
          f"xs has {num_steps} steps but ys has "
          f"{sequence.time_length(ys, 'ys')}."
      )
    batch = _input_batch(core, state, xs, 1)
    sequence.check_batch(ys, batch, "ys", 1)
    mask = sequence.check_mask(mask, num_steps, batch)
    # The checks of the first step, with the whole sequence for the message.
    _checked_compile(
        core,
        params,
        state,
        rng,
        sequence.first_step(xs),
        xs=xs,
        gradient=True,
    )
    k = window or core.window or (1 if core.online else num_steps)
    fused = _form(core) is fused_lib
    if fused and k != 1:
      raise ValueError(
          f"window={window}: {core.name} (form 'fused') computes its "
          "gradient step by step; use window=1 (or None), or its window "
          "form for longer windows."
      )
    inputs = (sequence.step_rngs(rng, num_steps), xs, ys, mask)

    def window_fn(carry, pieces):
      state, grads = carry
      g, state, losses, aux = _window(
          core, loss_fn, has_aux, params, state, pieces
      )
      return (state, tree_util.tree_map(jnp.add, grads, g)), (losses, aux)

    if (
        roll_order == "next_step"
        and core.online
        and not fused
        and k == 1
        and num_steps > 1
    ):
      # One-step windows, each step's roll moved into the next (in place).
      grads, state, losses, aux = _run_form(
          online_loop.sequence_gradient,
          core,
          loss_fn,
          has_aux,
          params,
          state,
          inputs,
      )
    else:
      zeros = tree_util.tree_map(jnp.zeros_like, params)
      (state, grads), (losses, aux) = sequence.scan_windows(
          window_fn, (state, zeros), inputs, num_steps, k
      )
    if reduction == "mean":
      count = sequence.mean_count(mask, num_steps, losses.dtype)
      if axis_name is not None:
        count = lax.pmean(count, axis_name)
      grads = tree_util.tree_map(lambda g: g / count.astype(g.dtype), grads)
      losses = losses / count
    if axis_name is not None:
      grads, losses = lax.pmean((grads, losses), axis_name)
    return SequenceResult(losses, grads, state, aux)

  if not check_finite:
    return fn
  roles = lambda args, res: {
      "params": args[0],
      "xs": args[3],
      "ys": args[4],
      "losses": res.losses,
      "grads": res.grads,
  }
  return sequence.checked(fn, roles)


# --------------------------------------------------------------------------
# Factories.


def _as_model(model: hk.TransformedWithState) -> hk.TransformedWithState:
  """The model, with ``hk.without_apply_rng`` undone so ``apply`` takes rng,
  keeping the state ``hk.layer_stack`` stacks per layer
  (:func:`layer_state.per_layer`)."""
  if not isinstance(model, hk.TransformedWithState):
    raise TypeError(
        "Learners take an hk.transform_with_state model (a step x_t -> "
        f"out_t with hidden state), got {type(model).__name__}."
    )
  try:
    takes_rng = "rng" in inspect.signature(model.apply).parameters
  except (TypeError, ValueError):
    takes_rng = True
  if not takes_rng:
    apply = model.apply
    model = hk.TransformedWithState(
        init=model.init,
        apply=lambda params, state, rng, *args: apply(params, state, *args),
    )
  return layer_state.per_layer(model)


def build_learner(
    model: hk.TransformedWithState,
    algorithm: Optional[protocol.TraceAlgorithm],
    name: str,
    window: Optional[int] = None,
    remat=None,
    trace_dtype=None,
) -> Learner:
  """The :class:`Learner` of ``algorithm`` (``None``: BPTT, whose default
  window is ``window``) on ``model``, named ``name``; the factories' one
  constructor."""
  if algorithm is not None:
    protocol.check_algorithm(algorithm)
    algorithm = precision.store_traces_in(algorithm, trace_dtype)
  core = _Core(
      _as_model(model),
      algorithm,
      name,
      collections.OrderedDict(),
      collections.OrderedDict(),
      window,
      sequence.check_remat(remat),
  )
  bound = lambda f: functools.partial(f, core)
  return Learner(
      name=name,
      init=bound(_init),
      init_state=bound(_init_state),
      apply=bound(_apply),
      unroll=bound(_unroll),
      evolve=bound(_evolve),
      reset=bound(_reset),
      value_and_grad=bound(_value_and_grad),
      sequence_grad=bound(_sequence_grad),
      report=bound(_report),
      traces=bound(_traces),
      compile=bound(_compile),
      verdicts=bound(_learner_verdicts),
  )
