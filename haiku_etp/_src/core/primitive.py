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
"""ETP primitives: registration, trace rules, and rule application.

An ETP primitive marks a trainable operation ``y = op(x, theta)`` in a model
step. From one ``impl`` function, :func:`register_primitive` derives the eager
implementation, abstract evaluation, MLIR lowering, JVP (JAX derives the
transpose from it) and a batching rule, so the primitive survives ``jit``,
``vmap``, ``grad``, ``pmap``, ``shard_map`` and ``jax.checkpoint`` and stays
visible in the jaxpr for the compiler to find.

Each primitive carries trace rules (:class:`ETPRules`) that the online learners
use. Rules act on one hidden-state slot (no trailing ``S`` axis) and take and
return dicts keyed by trainable input (``"weight"``, ``"bias"``). They work in
two execution contexts:

* batch kept: ``hidden_dim`` is y-shaped with the batch axis where the op puts
  it, and every trace leaf has a leading batch axis;
* batch stripped: inside a ``vmap`` over the batch, ``hidden_dim`` is one
  sample's y and trace leaves have no batch axis.

The module-level helpers :func:`drtrl_init`, :func:`drtrl_update`,
:func:`drtrl_solve`, :func:`pp_init` and :func:`pp_solve` apply the rules with
the ``S`` axis, preferring a primitive's closed-form fast path when it has one.
"""

import functools
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union
import warnings

import jax
from jax.extend import core as jex_core
from jax.interpreters import ad
from jax.interpreters import batching
from jax.interpreters import mlir
import jax.numpy as jnp

from haiku_etp._src.core import backend

Array = jax.Array
Params = Mapping[str, Any]
# A relation's trace or gradients: one leaf per trainable input.
Tree = dict[str, Array]
Trace = Mapping[str, Array]
Weights = Mapping[str, Array]
# What the trace rules read of an operand: its shape and dtype.
Aval = Union[jax.core.ShapedArray, jax.ShapeDtypeStruct]


class DecomposedPrimitiveWarning(UserWarning):
  """An ETP primitive was replaced by plain JAX ops under ``vmap``.

  The decomposed op computes the same values, but the compiler can no longer
  see it as a trainable relation.
  """


class ETPRules(NamedTuple):
  """Trace rules of one ETP primitive.

  Required rules (one hidden slot, both execution contexts):

  * ``yw_to_w(hidden_dim, trace, **params) -> trace``: multiply a y-shaped
    factor into a D-RTRL trace, keeping the trace's shape. The recurrence
    ``eps[..., a] = sum_b D[..., a, b] eps[..., b]`` and the solve against a
    learning signal are both built from it.
  * ``xy_to_dw(x, hidden_dim, weights, **params) -> dict``: the VJP of the op
    with respect to its trainable inputs, pulled back from the y-shaped
    ``hidden_dim``; parameter-shaped (summed over batch and positions).
  * ``xy_to_trace(x, hidden_dim, weights, **params) -> trace``: the
    instantaneous D-RTRL term ``D_f (x) x`` in the trace's layout, one slot.
  * ``trace_to_dw(trace, weights, **params) -> dict``: reduce a trace that was
    already multiplied by a learning signal to parameter shape (sum over the
    batch and any per-position slots).
  * ``init_drtrl(x_aval, y_aval, weight_avals, num_hidden_state, **params)``:
    zeros for the D-RTRL trace, each leaf with a trailing ``S`` axis.
  * ``init_pp(x_aval, y_aval, weight_avals, num_hidden_state, **params)``:
    zeros for the output-side ES-D-RTRL trace, shape ``(*y.shape, S)``.

  Optional fast paths, with the ``S`` axis:

  * ``drtrl_update(trace, d, d_f, x, weights, **params) -> trace`` computes
    ``eps' = D eps + D_f (x) x`` in one pass; ``d`` is ``(*y.shape, S, S)``
    and ``d_f`` is ``(*y.shape, S)``.
  * ``drtrl_solve(trace, g, weights, **params) -> dict`` computes the
    parameter-shaped ``sum_a reduce(g[..., a] * eps[..., a])``.
  * ``drtrl_window(trace, phi, cs, xs, weights, **params) -> trace``
    computes a whole window's roll in closed form,
    ``eps'[..., a] = sum_b phi[..., a, b] eps[..., b] + sum_t cs[t, ..., a]
    (x) xs[t]``: ``phi`` is ``(*y.shape, S', S)`` (``S'`` may differ from
    the trace's ``S``), ``cs`` is ``(k, *y.shape, S')`` and ``xs`` is
    ``(k, *x.shape)`` (``None`` for input-free ops). Without it, the
    generic form mixes with ``yw_to_w`` and sums ``xy_to_trace`` over the
    window step by step (:func:`drtrl_window`).
  """

  yw_to_w: Callable[..., Any]
  xy_to_dw: Callable[..., Any]
  xy_to_trace: Callable[..., Any]
  trace_to_dw: Callable[..., Any]
  init_drtrl: Callable[..., Any]
  init_pp: Callable[..., Any]
  drtrl_update: Optional[Callable[..., Any]] = None
  drtrl_solve: Optional[Callable[..., Any]] = None
  drtrl_window: Optional[Callable[..., Any]] = None


# Rules are looked up by primitive identity.
_RULES: dict[jex_core.Primitive, ETPRules] = {}


class ETPPrimitive(jex_core.Primitive):
  """A JAX primitive that marks a trainable operation and carries trace rules.

  Build instances with :func:`register_primitive`.

  Attributes:
    impl: the function computing the op from its operands and params.
    batched: whether ``x`` carries a batch axis inside ``impl``.
    x_invar_index: position of the input ``x`` among the operands, or ``None``
      for ops without an input (elementwise parameters).
    input_free_keys: trainable inputs whose Jacobian does not involve ``x``
      (a bias is a weight on a constant input of 1). ES-D-RTRL gives them the
      filtered constant as input-side trace.
    batched_counterpart: for an unbatched op, the primitive that ``vmap`` over
      ``x`` promotes it to.
  """

  def __init__(
      self,
      name: str,
      impl: Callable[..., Array],
      *,
      batched: bool,
      trainable_invars_fn: Callable[[Params], Mapping[str, int]],
      x_invar_index: Optional[int],
      input_free_keys: Optional[Sequence[str]] = None,
      batch_axes_fn: Optional[Callable[[Params], Any]] = None,
      own_trace_layout_fn: Optional[Callable[[Params], bool]] = None,
  ):
    super().__init__(name)
    # jax's Primitive.impl is a method that def_impl replaces per instance.
    self.impl = impl  # type: ignore[method-assign]
    self.batched = batched
    self.x_invar_index = x_invar_index
    self._trainable_invars_fn = trainable_invars_fn
    self._input_free_keys = input_free_keys
    self._batch_axes_fn = batch_axes_fn or (lambda params: (0, 0))
    self._own_trace_layout_fn = own_trace_layout_fn or (lambda params: False)
    self.batched_counterpart: Optional["ETPPrimitive"] = None
    self.tangent_impl = impl

  def trainable_invars(self, params: Params) -> dict[str, int]:
    """Maps each trainable input name to its operand index."""
    return dict(self._trainable_invars_fn(params))

  def input_free_keys(self, params: Params) -> frozenset[str]:
    """Trainable inputs whose Jacobian does not depend on ``x``."""
    if self._input_free_keys is not None:
      return frozenset(self._input_free_keys)
    if self.x_invar_index is None:
      return frozenset(self.trainable_invars(params))
    return frozenset()

  def batch_axes(self, params: Params) -> Optional[tuple[int, int]]:
    """``(x_batch_axis, y_batch_axis)``, or ``None`` if the batch is mixed."""
    return self._batch_axes_fn(params)

  def own_trace_layout(self, params: Params) -> bool:
    """Whether its D-RTRL trace has a layout of its own (extra entries, or
    slots that the generic rules do not know): then only its fast paths
    roll and solve it, and it is no source of cross-group traces."""
    return bool(self._own_trace_layout_fn(params))

  def split_operands(
      self, args: Sequence[Any], params: Params
  ) -> tuple[Any, dict[str, Any]]:
    """Splits operands into ``(x, weights)`` using the primitive's metadata."""
    x = None if self.x_invar_index is None else args[self.x_invar_index]
    weights = {k: args[i] for k, i in self.trainable_invars(params).items()}
    return x, weights

  def bind_operands(
      self, x: Any, weights: Mapping[str, Any], params: Params
  ) -> Any:
    """Binds the primitive from an input and named trainable operands."""
    index = self.trainable_invars(params)
    args: list[Any] = [None] * (len(index) + (self.x_invar_index is not None))
    if self.x_invar_index is not None:
      args[self.x_invar_index] = x
    for k, i in index.items():
      args[i] = weights[k]
    return self.bind(*args, **params)

  def register_etp_rules(self, **rules: Callable[..., Any]) -> ETPRules:
    """Registers the trace rules of this primitive (see :class:`ETPRules`)."""
    missing = [
        f
        for f in ETPRules._fields
        if f not in rules and ETPRules._field_defaults.get(f, 0) is not None
    ]
    if missing:
      raise TypeError(f"Rules for {self.name!r} lack {missing}.")
    unknown = set(rules) - set(ETPRules._fields)
    if unknown:
      raise TypeError(
          f"Unknown rules for {self.name!r}: {sorted(unknown)}; "
          f"known rules are {list(ETPRules._fields)}."
      )
    _RULES[self] = ETPRules(**rules)
    return _RULES[self]

  @property
  def rules(self) -> ETPRules:
    return get_etp_rules(self)


def is_etp_primitive(prim: Any) -> bool:
  """Whether ``prim`` is an ETP primitive with registered trace rules."""
  return isinstance(prim, ETPPrimitive) and prim in _RULES


def get_etp_rules(prim: jex_core.Primitive) -> ETPRules:
  """Returns the trace rules registered for ``prim``.

  Raises:
    KeyError: if ``prim`` has no registered rules.
  """
  try:
    return _RULES[prim]
  except (KeyError, TypeError):
    raise KeyError(
        f"No ETP rules are registered for primitive {prim!r}; call "
        "register_etp_rules on it first."
    ) from None


def _abstract_eval(
    *avals: jax.core.AbstractValue, impl: Callable[..., Array], **params: Any
) -> jax.core.AbstractValue:
  # Tracing impl on the operands' own avals lets JAX's rules decide the
  # output's sharding and, under shard_map, its varying manual axes.
  closed = jax.make_jaxpr(functools.partial(impl, **params))(*avals)
  return closed.out_avals[0]


def _jvp(
    primals: Sequence[Any],
    tangents: Sequence[Any],
    *,
    prim: ETPPrimitive,
    **params: Any,
) -> tuple[Any, Any]:
  out = prim.bind(*primals, **params)
  nonzero = [i for i, t in enumerate(tangents) if type(t) is not ad.Zero]

  def partial_impl(*nz_args: Any) -> Array:
    args = list(primals)
    for i, a in zip(nonzero, nz_args):
      args[i] = a
    return prim.tangent_impl(*args, **params)

  if not nonzero:
    return out, ad.Zero(jax.typeof(out).to_tangent_aval())
  # The tangent map is linear in the tangents, so JAX can transpose it.
  _, t_out = jax.jvp(
      partial_impl,
      [primals[i] for i in nonzero],
      [tangents[i] for i in nonzero],
  )
  return out, t_out


def _decompose(
    prim: ETPPrimitive,
    args: Sequence[Any],
    dims: Sequence[Optional[int]],
    params: Params,
    why: str,
) -> tuple[Array, int]:
  warnings.warn(
      f"vmap of {prim.name} {why}; it is computed with plain JAX ops and is "
      "no longer visible to the ETP compiler.",
      DecomposedPrimitiveWarning,
      stacklevel=4,
  )
  fn = functools.partial(prim.impl, **params)
  return jax.vmap(fn, in_axes=tuple(dims))(*args), 0


def _batching_rule(
    args: Sequence[Any],
    dims: Sequence[Optional[int]],
    *,
    prim: ETPPrimitive,
    **params: Any,
) -> tuple[Array, int]:
  x_idx = prim.x_invar_index
  others = [d for i, d in enumerate(dims) if i != x_idx and d is not None]
  d = None if x_idx is None else dims[x_idx]
  if x_idx is None or others or d is None:
    return _decompose(
        prim,
        args,
        dims,
        params,
        "over a trainable operand cannot be expressed as one op",
    )
  x = args[x_idx]
  new_args = list(args)
  if not prim.batched:
    if prim.batched_counterpart is None:
      return _decompose(prim, args, dims, params, "has no batched counterpart")
    new_args[x_idx] = jnp.moveaxis(x, d, 0)
    return prim.batched_counterpart.bind(*new_args, **params), 0
  axes = prim.batch_axes(params)
  if axes is None:
    return _decompose(
        prim,
        args,
        dims,
        params,
        "cannot fold the mapped axis into a grouped batch",
    )
  x_axis, y_axis = axes
  # Fold the mapped axis into the op's own batch axis, mapped axis outermost.
  x = jnp.moveaxis(x, d, x_axis)
  v = x.shape[x_axis]
  x = x.reshape(x.shape[:x_axis] + (-1,) + x.shape[x_axis + 2 :])
  new_args[x_idx] = x
  y = prim.bind(*new_args, **params)
  y = y.reshape(
      y.shape[:y_axis] + (v, y.shape[y_axis] // v) + y.shape[y_axis + 1 :]
  )
  return y, y_axis


def register_primitive(
    name: str,
    impl: Callable[..., Array],
    *,
    batched: bool,
    trainable_invars_fn: Callable[[Params], Mapping[str, int]],
    x_invar_index: Optional[int],
    input_free_keys: Optional[Sequence[str]] = None,
    batch_axes_fn: Optional[Callable[[Params], Any]] = None,
    batching_rule: Optional[Callable[..., Any]] = None,
    batched_counterpart: Optional[ETPPrimitive] = None,
    tangent_impl: Optional[Callable[..., Array]] = None,
    own_trace_layout_fn: Optional[Callable[[Params], bool]] = None,
) -> ETPPrimitive:
  """Creates an ETP primitive from a single implementation function.

  Eager evaluation, abstract evaluation, MLIR lowering (for every platform),
  JVP and batching are derived from ``impl``. The JVP binds the primitive for
  the primal output and differentiates ``impl`` for the tangent, which is
  linear in the tangents, so reverse mode works by JAX's transposition.

  Args:
    name: primitive name, as shown in jaxprs.
    impl: ``impl(*operands, **params) -> Array`` written with JAX ops.
    batched: whether ``impl`` expects a batch axis on ``x``.
    trainable_invars_fn: ``params -> {name: operand_index}`` of the trainable
      operands, e.g. ``{"weight": 1, "bias": 2}``.
    x_invar_index: operand index of the input ``x``, or ``None``.
    input_free_keys: trainable operands whose Jacobian does not involve ``x``
      (biases). Defaults to none, or to all when there is no ``x``.
    batch_axes_fn: ``params -> (x_batch_axis, y_batch_axis)`` for a batched
      op, or ``None`` where ``vmap`` cannot fold into the op's batch. Defaults
      to ``(0, 0)``.
    batching_rule: overrides the derived batching rule; it receives
      ``(args, dims, **params)`` and returns ``(out, out_dim)``.
    batched_counterpart: for an unbatched op, the batched primitive that
      ``vmap`` over ``x`` alone promotes it to.
    tangent_impl: the function whose JVP gives the op's tangent map, when
      ``impl`` computes the same values by a route that is not
      differentiable (an event-driven sum); defaults to ``impl``.
    own_trace_layout_fn: ``params -> bool``: whether the D-RTRL trace
      (``init_drtrl``) has a layout of its own that only the fast paths
      ``drtrl_update`` and ``drtrl_solve`` roll and solve (the embedding's
      per-row slots); defaults to never.

  Returns:
    The new :class:`ETPPrimitive`. Register its rules with
    ``prim.register_etp_rules(...)``.

  >>> import jax.numpy as jnp
  >>> scale_p = register_primitive(
  ...     "my_scale", lambda x, w: x * w, batched=False,
  ...     trainable_invars_fn=lambda p: {"weight": 1}, x_invar_index=0)
  >>> scale_p.bind(jnp.ones(2), jnp.full(2, 3.)).tolist()
  [3.0, 3.0]
  """
  prim = ETPPrimitive(
      name,
      impl,
      batched=batched,
      trainable_invars_fn=trainable_invars_fn,
      x_invar_index=x_invar_index,
      input_free_keys=input_free_keys,
      batch_axes_fn=batch_axes_fn,
      own_trace_layout_fn=own_trace_layout_fn,
  )
  prim.batched_counterpart = batched_counterpart
  prim.tangent_impl = tangent_impl or impl
  prim.def_impl(impl)
  prim.def_abstract_eval(functools.partial(_abstract_eval, impl=impl))
  mlir.register_lowering(prim, mlir.lower_fun(impl, multiple_results=False))
  ad.primitive_jvps[prim] = functools.partial(_jvp, prim=prim)
  if batching_rule is None:
    batching_rule = functools.partial(_batching_rule, prim=prim)
  batching.primitive_batchers[prim] = batching_rule
  return prim


def register_primitive_pair(
    name: str,
    impl: Callable[..., Array],
    rules: Mapping[str, Any],
    **kwargs: Any,
) -> tuple[ETPPrimitive, ETPPrimitive]:
  """``(batched, unbatched)`` primitives ``etp_batched_<name>`` and
  ``etp_<name>`` of one ``impl`` and one set of rules: the unbatched one
  takes one sample and ``vmap`` over its input promotes it to the batched
  one. ``kwargs`` go to :func:`register_primitive` for both."""
  batched = register_primitive(
      f"etp_batched_{name}", impl, batched=True, **kwargs
  )
  batched.register_etp_rules(**rules)
  single = register_primitive(
      f"etp_{name}",
      impl,
      batched=False,
      batched_counterpart=batched,
      **kwargs,
  )
  single.register_etp_rules(**rules)
  return batched, single


mix_states = backend.mix_states
weighted_state_sum = backend.weighted_state_sum
sum_leading = backend.sum_leading


def sum_to_rank(x: Array, rank: int) -> Array:
  """Sums the leading axes of ``x`` (with :func:`sum_leading`) to ``rank``."""
  return sum_leading(x, x.ndim - rank)


def _slot(tree: Mapping[str, Array], a: int) -> Tree:
  return {k: v[..., a] for k, v in tree.items()}


def _add(a: Mapping[str, Array], b: Mapping[str, Array]) -> Tree:
  return {k: a[k] + b[k] for k in a}


def drtrl_init(
    prim: ETPPrimitive,
    x_aval: Optional[Aval],
    y_aval: Aval,
    weight_avals: Mapping[str, Aval],
    num_hidden_state: int,
    params: Params,
) -> Tree:
  """Zero D-RTRL traces of one relation feeding a group of ``S`` states."""
  return prim.rules.init_drtrl(
      x_aval, y_aval, weight_avals, num_hidden_state, **params
  )


def drtrl_update(
    prim: ETPPrimitive,
    trace: Mapping[str, Array],
    d: Array,
    d_f: Array,
    x: Optional[Array],
    weights: Weights,
    params: Params,
    *,
    fast: bool = True,
) -> Tree:
  r"""One D-RTRL step for one relation.

  .. math::
    \epsilon^t[\dots, a] = \sum_b D^t[\dots, a, b]\,\epsilon^{t-1}[\dots, b]
      + D_f^t[\dots, a] \otimes x^t

  Args:
    prim: the relation's ETP primitive.
    trace: dict of trace leaves, each with a trailing ``S`` axis.
    d: per-position hidden Jacobian blocks, ``(*y.shape, S, S)``.
    d_f: tail Jacobian, ``(*y.shape, S)``.
    x: the op's input at this step (``None`` for input-free ops).
    weights: dict of the op's trainable operands.
    params: the primitive's params.
    fast: use the primitive's closed-form ``drtrl_update`` when it has one;
      ``False`` forces the generic path through ``xy_to_trace`` and
      ``yw_to_w``.

  Returns:
    The updated trace, same structure and shapes as ``trace``.
  """
  rules = prim.rules
  if rules.drtrl_update is not None and (fast or prim.own_trace_layout(params)):
    return rules.drtrl_update(trace, d, d_f, x, weights, **params)
  num_states = d_f.shape[-1]
  slots = []
  for a in range(num_states):
    acc = rules.xy_to_trace(x, d_f[..., a], weights, **params)
    for b in range(num_states):
      acc = _add(acc, rules.yw_to_w(d[..., a, b], _slot(trace, b), **params))
    slots.append(acc)
  return {k: jnp.stack([s[k] for s in slots], axis=-1) for k in trace}


def drtrl_solve(
    prim: ETPPrimitive,
    trace: Mapping[str, Array],
    g: Array,
    weights: Weights,
    params: Params,
    *,
    fast: bool = True,
) -> Tree:
  """Parameter-shaped gradient of a relation from its trace and ``g = dL/dh``.

  Args:
    prim: the relation's ETP primitive.
    trace: dict of trace leaves with a trailing ``S`` axis.
    g: learning signal for the group, ``(*y.shape, S)``.
    weights: dict of the op's trainable operands (for shapes).
    params: the primitive's params.
    fast: use the primitive's closed-form ``drtrl_solve`` when it has one.

  Returns:
    Dict of gradients shaped like ``weights``.
  """
  rules = prim.rules
  if rules.drtrl_solve is not None and (fast or prim.own_trace_layout(params)):
    return rules.drtrl_solve(trace, g, weights, **params)
  total: Optional[Tree] = None
  for a in range(g.shape[-1]):
    part = rules.trace_to_dw(
        rules.yw_to_w(g[..., a], _slot(trace, a), **params), weights, **params
    )
    total = part if total is None else _add(total, part)
  assert total is not None, "a learning signal without states"
  return total


# How a window's roll of one relation's D-RTRL trace is computed
# (:func:`window_form`).
WINDOW_FORMS = ("closed", "accumulated", "per_step")


def window_form(
    prim: ETPPrimitive, params: Params, *, fast: bool = True
) -> str:
  """How :func:`drtrl_window` rolls ``prim``'s trace through a window.

  ``"closed"``: the primitive's ``drtrl_window`` (one contraction over the
  window's steps); ``"accumulated"``: the generic form (``phi`` applied once,
  the instantaneous terms summed with ``xy_to_trace`` step by step);
  ``"per_step"``: a trace layout of its own without ``drtrl_window``, which
  only its per-step rule can roll.
  """
  rules = prim.rules
  own = prim.own_trace_layout(params)
  if rules.drtrl_window is not None and (fast or own):
    return "closed"
  return "per_step" if own else "accumulated"


def drtrl_mix(
    prim: ETPPrimitive, trace: Mapping[str, Array], phi: Array, params: Params
) -> Tree:
  """``out[..., a] = sum_b phi[..., a, b] trace[..., b]`` with the generic
  rules; ``phi`` is ``(*y.shape, S', S)`` (``S'`` states out)."""
  rules = prim.rules
  slots: list[Tree] = []
  for a in range(phi.shape[-2]):
    acc: Tree = {}
    for b in range(phi.shape[-1]):
      part = rules.yw_to_w(phi[..., a, b], _slot(trace, b), **params)
      acc = _add(acc, part) if b else part
    slots.append(acc)
  return {k: jnp.stack([s[k] for s in slots], axis=-1) for k in trace}


def outer_sum(
    prim: ETPPrimitive,
    cs: Array,
    xs: Optional[Array],
    weights: Weights,
    params: Params,
) -> Tree:
  """``sum_t cs[t, ..., a] (x) xs[t]`` in the trace's layout, with the
  generic ``xy_to_trace`` summed step by step (a scan over the window)."""
  rules = prim.rules

  def term(x: Optional[Array], c: Array) -> Tree:
    slots = [
        rules.xy_to_trace(x, c[..., a], weights, **params)
        for a in range(c.shape[-1])
    ]
    return {k: jnp.stack([s[k] for s in slots], axis=-1) for k in slots[0]}

  first = None if xs is None else xs[0]
  zeros = jax.tree_util.tree_map(
      lambda a: jnp.zeros(a.shape, a.dtype),
      jax.eval_shape(term, first, cs[0]),
  )
  body = lambda acc, inp: (_add(acc, term(*inp)), None)
  total, _ = jax.lax.scan(body, zeros, (xs, cs))
  return total


def drtrl_window(
    prim: ETPPrimitive,
    trace: Mapping[str, Array],
    phi: Array,
    cs: Array,
    xs: Optional[Array],
    weights: Weights,
    params: Params,
    *,
    fast: bool = True,
) -> Tree:
  r"""A whole window's D-RTRL roll of one relation, in closed form.

  .. math::
    \epsilon^{e+k}[\dots, a] = \sum_b \Phi[\dots, a, b]\,
      \epsilon^e[\dots, b] + \sum_{t} c_t[\dots, a] \otimes x^t

  with :math:`\Phi = D^{e+k} \cdots D^{e+1}` and :math:`c_t =
  \Phi_{e+k,t} D_f^t` (``docs/design.md``, "The closed-form window roll").

  Args:
    prim: the relation's ETP primitive.
    trace: the trace at the window's entry (trailing ``S`` axis).
    phi: ``(*y.shape, S', S)``.
    cs: ``(k, *y.shape, S')``.
    xs: the op's inputs over the window, ``(k, *x.shape)``, or ``None``.
    weights: the op's trainable operands.
    params: the primitive's params.
    fast: use the primitive's ``drtrl_window`` when it has one.

  Returns:
    The trace after the window, with ``S'`` states.

  Raises:
    ValueError: for a primitive whose trace only its per-step rule rolls
      (:func:`window_form` is ``"per_step"``).
  """
  form = window_form(prim, params, fast=fast)
  closed = prim.rules.drtrl_window
  if form == "closed" and closed is not None:
    return closed(trace, phi, cs, xs, weights, **params)
  if form == "per_step":
    raise ValueError(
        f"{prim.name} keeps a trace layout of its own and has no "
        "drtrl_window rule: roll it step by step (drtrl_update)."
    )
  return _add(
      drtrl_mix(prim, trace, phi, params),
      outer_sum(prim, cs, xs, weights, params),
  )


def summed_dw_per_sample(
    prim: ETPPrimitive,
    xs: Optional[Array],
    signals: Array,
    weights: Weights,
    params: Params,
) -> Tree:
  """Per sample, ``sum_t xy_to_dw(x_t, signal_t)``: the op's weight VJP with
  the window's steps as its batch. ``xs`` is ``(k, *x.shape)`` (or
  ``None``), ``signals`` ``(k, *y.shape)``, both with the batch axis where
  the op puts it (an input-free op's signal has its group's shape, batch
  first); returns ``{name: (B, *weight.shape)}``.

  Raises:
    ValueError: for an op without a batch axis of its own.
  """

  def per_sample(v: Array, axis: int) -> Array:
    # (k, ..., B at 1 + axis, ...) -> (B, ..., k at axis, ...).
    return jnp.moveaxis(jnp.moveaxis(v, 1 + axis, 0), 1, 1 + axis)

  if xs is None:
    # Input-free ops see their group's shape, batch first.
    free = lambda s: prim.rules.xy_to_dw(None, s, weights, **params)
    return jax.vmap(free)(per_sample(signals, 0))
  axes = prim.batch_axes(params) if prim.batched else None
  if axes is None:
    raise ValueError(f"{prim.name}: no per-sample batch axis to keep.")
  x_axis, y_axis = axes
  one = lambda x, s: prim.rules.xy_to_dw(x, s, weights, **params)
  return jax.vmap(one)(per_sample(xs, x_axis), per_sample(signals, y_axis))


def pp_init(
    prim: ETPPrimitive,
    x_aval: Optional[Aval],
    y_aval: Aval,
    weight_avals: Mapping[str, Aval],
    num_hidden_state: int,
    params: Params,
) -> Array:
  """Zero output-side ES-D-RTRL trace ``eps_f`` of shape ``(*y.shape, S)``."""
  return prim.rules.init_pp(
      x_aval, y_aval, weight_avals, num_hidden_state, **params
  )


def pp_solve(
    prim: ETPPrimitive,
    x_trace: Optional[Array],
    one_trace: "jax.typing.ArrayLike",
    f_trace: Array,
    g: Array,
    weights: Weights,
    params: Params,
    correction: "jax.typing.ArrayLike" = 1.0,
) -> Tree:
  r"""ES-D-RTRL gradient of one relation at one step.

  .. math::
    \nabla\theta \approx \mathrm{xy\_to\_dw}\Bigl(\epsilon_x,
      \sum_a \epsilon_f[\dots, a]\, g[\dots, a] / c\Bigr)

  Input-free trainable operands (biases) use the filtered constant
  ``one_trace`` as their input-side trace.

  Args:
    prim: the relation's ETP primitive.
    x_trace: the filtered input ``eps_x`` (``None`` for input-free ops).
    one_trace: the filtered constant input, a scalar.
    f_trace: output-side trace ``(*y.shape, S)``.
    g: learning signal ``(*y.shape, S)``.
    weights: dict of the op's trainable operands.
    params: the primitive's params.
    correction: the bias correction ``c`` of the output-side trace.

  Returns:
    Dict of gradients shaped like ``weights``.
  """
  signal = jnp.sum(f_trace * g, axis=-1) / correction
  return pp_signal_dw(prim, x_trace, one_trace, signal, weights, params)


def pp_signal_dw(
    prim: ETPPrimitive,
    x_trace: Optional[Array],
    one_trace: "jax.typing.ArrayLike",
    signal: Array,
    weights: Weights,
    params: Params,
) -> Tree:
  """``xy_to_dw(eps_x, signal)``: the op's weight VJP at the filtered input.

  Input-free trainable operands (biases) take ``one_trace`` as their input.

  Args:
    prim: the relation's ETP primitive.
    x_trace: the filtered input ``eps_x`` (``None`` for input-free ops).
    one_trace: the filtered constant input, a scalar.
    signal: the output-side signal, shaped like the op's output.
    weights: dict of the op's trainable operands.
    params: the primitive's params.

  Returns:
    Dict of gradients shaped like ``weights``.
  """
  grads = prim.rules.xy_to_dw(x_trace, signal, weights, **params)
  free = prim.input_free_keys(params)
  return {k: v * one_trace if k in free else v for k, v in grads.items()}
