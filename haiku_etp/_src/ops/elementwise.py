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
"""Elementwise ETP primitive: a per-position parameter, optionally transformed.

``y = fn(w)`` (or ``y = w``) where ``fn`` acts position by position, such as a
decay ``exp(-dt / tau)`` or a gain. The op has no input ``x``; ES-D-RTRL treats
its parameter as a weight on a constant input.

The D-RTRL trace is y-shaped: ``(*y.shape, S)``, with a leading batch axis when
the hidden group carries one (``init_drtrl`` receives the y aval as the group
sees it, batch included). ``vmap`` over ``w`` keeps the primitive, since an
elementwise ``fn`` maps a batched ``w`` position by position.
"""

from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import saiunit as u

from haiku_etp._src.core import primitive
from haiku_etp._src.core import program
from haiku_etp._src.core import units

Array = jax.Array


def _elementwise_impl(
    w: Array, *, fn: Optional[Callable[[Array], Array]]
) -> Array:
  return w if fn is None else fn(w)


def _derivative(fn: Optional[Callable[[Array], Array]], w: Array) -> Array:
  """``fn'(w)`` position by position."""
  if fn is None:
    return jnp.ones_like(w)
  return jax.jvp(fn, (w,), (jnp.ones_like(w),))[1]


def _xy_to_trace(
    x: Optional[Array],
    hidden_dim: Array,
    weights: primitive.Weights,
    *,
    fn: Optional[Callable[[Array], Array]],
) -> primitive.Tree:
  del x
  return {"weight": hidden_dim * _derivative(fn, weights["weight"])}


def _yw_to_w(
    hidden_dim: Array,
    trace: primitive.Trace,
    *,
    fn: Optional[Callable[[Array], Array]],
) -> primitive.Tree:
  del fn
  return {"weight": trace["weight"] * hidden_dim}


def _trace_to_dw(
    trace: primitive.Trace,
    weights: primitive.Weights,
    *,
    fn: Optional[Callable[[Array], Array]],
) -> primitive.Tree:
  del fn
  return {
      "weight": primitive.sum_to_rank(trace["weight"], weights["weight"].ndim)
  }


def _xy_to_dw(
    x: Optional[Array],
    hidden_dim: Array,
    weights: primitive.Weights,
    *,
    fn: Optional[Callable[[Array], Array]],
) -> primitive.Tree:
  del x
  w = weights["weight"]
  _, vjp = jax.vjp(lambda v: _elementwise_impl(v, fn=fn), w)
  return {
      "weight": vjp(primitive.sum_to_rank(hidden_dim, w.ndim).astype(w.dtype))[
          0
      ]
  }


def _init_drtrl(
    x_aval: Optional[primitive.Aval],
    y_aval: primitive.Aval,
    weight_avals: Mapping[str, primitive.Aval],
    num_hidden_state: int,
    *,
    fn: Optional[Callable[[Array], Array]],
) -> primitive.Tree:
  del x_aval, weight_avals, fn
  return {
      "weight": jnp.zeros(
          tuple(y_aval.shape) + (num_hidden_state,), y_aval.dtype
      )
  }


def _init_pp(
    x_aval: Optional[primitive.Aval],
    y_aval: primitive.Aval,
    weight_avals: Mapping[str, primitive.Aval],
    num_hidden_state: int,
    *,
    fn: Optional[Callable[[Array], Array]],
) -> Array:
  del x_aval, weight_avals, fn
  return jnp.zeros(tuple(y_aval.shape) + (num_hidden_state,), y_aval.dtype)


def _drtrl_update(
    trace: primitive.Trace,
    d: Array,
    d_f: Array,
    x: Optional[Array],
    weights: primitive.Weights,
    *,
    fn: Optional[Callable[[Array], Array]],
) -> primitive.Tree:
  del x
  deriv = _derivative(fn, weights["weight"])
  return {
      "weight": (
          primitive.mix_states(d, trace["weight"]) + d_f * deriv[..., None]
      )
  }


def _drtrl_solve(
    trace: primitive.Trace,
    g: Array,
    weights: primitive.Weights,
    *,
    fn: Optional[Callable[[Array], Array]],
) -> primitive.Tree:
  del fn
  per_position = primitive.weighted_state_sum(trace["weight"], g)
  return {"weight": primitive.sum_to_rank(per_position, weights["weight"].ndim)}


def _drtrl_window(
    trace: primitive.Trace,
    phi: Array,
    cs: Array,
    xs: Optional[Array],
    weights: primitive.Weights,
    *,
    fn: Optional[Callable[[Array], Array]],
) -> primitive.Tree:
  del xs
  deriv = _derivative(fn, weights["weight"])
  return {
      "weight": (
          primitive.mix_states(phi, trace["weight"])
          + jnp.sum(cs, axis=0) * deriv[..., None]
      )
  }


def _batching_rule(
    args: Sequence[Any],
    dims: Sequence[Optional[int]],
    *,
    fn: Optional[Callable[[Array], Array]],
) -> tuple[Array, Optional[int]]:
  # fn acts position by position, so it maps a batched w unchanged.
  return etp_elementwise_p.bind(*args, fn=fn), dims[0]


etp_elementwise_p = primitive.register_primitive(
    "etp_elementwise",
    _elementwise_impl,
    batched=False,
    trainable_invars_fn=lambda params: {"weight": 0},
    x_invar_index=None,
    batching_rule=_batching_rule,
)
etp_elementwise_p.register_etp_rules(
    yw_to_w=_yw_to_w,
    xy_to_dw=_xy_to_dw,
    xy_to_trace=_xy_to_trace,
    trace_to_dw=_trace_to_dw,
    init_drtrl=_init_drtrl,
    init_pp=_init_pp,
    drtrl_update=_drtrl_update,
    drtrl_solve=_drtrl_solve,
    drtrl_window=_drtrl_window,
)


class _OnMantissa:
  """Runs a unit-aware ``fn`` on mantissas: ``m -> mantissa(fn(m * unit))``."""

  def __init__(
      self, fn: Callable[[Any], Any], in_unit: u.Unit, out_unit: u.Unit
  ):
    self.fn, self.in_unit, self.out_unit = fn, in_unit, out_unit

  def __call__(self, w: Array) -> Any:
    out = self.fn(u.Quantity(w, unit=self.in_unit))
    return u.Quantity(out).to_decimal(self.out_unit)

  def _key(self) -> tuple[Any, u.Unit, u.Unit]:
    return (self.fn, self.in_unit, self.out_unit)

  def __eq__(self, other: object) -> bool:
    return isinstance(other, _OnMantissa) and self._key() == other._key()

  def __hash__(self) -> int:
    return hash((self.fn, str(self.in_unit), str(self.out_unit)))

  def __repr__(self) -> str:
    return f"{getattr(self.fn, '__name__', self.fn)}[{self.in_unit}]"


def elementwise(w: Any, fn: Optional[Callable[[Any], Any]] = None) -> Any:
  r"""ETP-routed per-position parameter :math:`y = f(w)`.

  Args:
    w: the parameter, any shape; may be a ``saiunit.Quantity``.
    fn: optional function applied position by position. With a unitful
      ``w``, ``fn`` receives the quantity and its result's unit is carried
      to ``y``.

  Returns:
    ``fn(w)`` (or ``w``), of the same shape as ``w``.

  Raises:
    ValueError: if ``fn`` changes the shape or mixes positions (its jaxpr or
      its derivative's holds a reduction, a sort, a cumulative op, ...).

  >>> import jax.numpy as jnp
  >>> elementwise(jnp.zeros(3), jnp.exp).tolist()
  [1.0, 1.0, 1.0]
  """
  w_m, w_unit = units.split(w)
  if fn is not None and not callable(fn):
    raise ValueError(f"fn must be callable or None, got {fn!r}.")
  if fn is None:
    out_unit = w_unit
  else:
    user_fn = fn
    if w_unit.is_unitless:
      on_quantity = user_fn
    else:
      on_quantity = lambda m: user_fn(u.Quantity(m, unit=w_unit))
    probe = jax.eval_shape(
        on_quantity, jax.ShapeDtypeStruct(w_m.shape, w_m.dtype)
    )
    if probe.shape != w_m.shape:
      raise ValueError(
          f"fn must act position by position: it maps shape {w_m.shape} to "
          f"{probe.shape}."
      )
    out_unit = u.get_unit(probe)
    if not (w_unit.is_unitless and out_unit.is_unitless):
      fn = _OnMantissa(fn, w_unit, out_unit)
    why = program.preserves_positions(
        fn, jax.ShapeDtypeStruct(w_m.shape, w_m.dtype)
    )
    if why:
      raise ValueError(
          f"fn must act position by position, but {why}: its derivative "
          "would be taken per position and give a wrong gradient. Use an "
          "elementwise fn (exp, a gain, a sigmoid), or compute the mixing "
          "outside the op."
      )
  y = etp_elementwise_p.bind(w_m, fn=fn)
  return units.with_unit(y, out_unit)
