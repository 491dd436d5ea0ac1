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
"""Dense ETP primitive: ``y = x @ w (+ b)``.

Two primitives share one implementation and one set of rules:
``etp_dense_p`` takes one sample ``x`` of shape ``(I,)`` and
``etp_batched_dense_p`` takes a batch ``(B, I)``. ``vmap`` over ``x`` promotes
the first to the second, so the op stays visible in the jaxpr.

D-RTRL trace per relation and group (``S`` states per position):
``weight`` is ``(B, I, O, S)`` and ``bias`` is ``(B, O, S)`` with the batch
kept, ``(I, O, S)`` and ``(O, S)`` with it stripped. The recurrence and solve
have closed forms, written as fused broadcasts (a loop over the ``S`` states)
and a pairwise sum over the batch: the trace roll is memory-bound, and these
run at copy speed where a batched contraction is an order of magnitude slower.

With ``max_events`` the forward pass is event-driven (see :func:`dense`);
the rules are the same.
"""

from typing import Any, Mapping, Optional

import jax
from jax import lax
import jax.numpy as jnp

from haiku_etp._src.core import checks
from haiku_etp._src.core import primitive
from haiku_etp._src.ops import sparse as sparse_lib
from haiku_etp._src.core import units

Array = jax.Array


def _event_matmul(x: Array, w: Array, max_events: int) -> Array:
  """``x @ w`` from the rows of ``w`` at the nonzero inputs (at most
  ``max_events`` per sample)."""
  lead = x.shape[:-1]
  x2 = jnp.reshape(x, (-1, x.shape[-1]))
  idx, values = sparse_lib.active_inputs(x2, max_events)
  rows = jnp.take(w, jnp.minimum(idx, w.shape[0] - 1), axis=0)
  y = jnp.einsum("ne,neo->no", values.astype(w.dtype), rows)
  return jnp.reshape(y, lead + (w.shape[1],))


def _dense_impl(
    x: Array,
    w: Array,
    *bias: Array,
    has_bias: bool,
    max_events: Optional[int] = None,
) -> Array:
  if max_events is None:
    y = jnp.matmul(x, w)
  else:
    y = lax.cond(
        jnp.max(jnp.sum(x != 0, axis=-1)) <= max_events,
        lambda: _event_matmul(x, w, max_events).astype(jnp.result_type(x, w)),
        lambda: jnp.matmul(x, w),
    )
  if has_bias:
    y = y + bias[0]
  return y


def _dense_tangent_impl(
    x: Array,
    w: Array,
    *bias: Array,
    has_bias: bool,
    max_events: Optional[int] = None,
) -> Array:
  # Which inputs are nonzero has no derivative: the tangent map is the
  # matmul's.
  del max_events
  return _dense_impl(x, w, *bias, has_bias=has_bias)


def _trainable_invars(params: primitive.Params) -> dict[str, int]:
  return {"weight": 1, "bias": 2} if params["has_bias"] else {"weight": 1}


def _xy_to_trace(
    x: Array,
    hidden_dim: Array,
    weights: primitive.Weights,
    *,
    has_bias: bool,
    **_: Any,
) -> primitive.Tree:
  del weights
  out = {"weight": x[..., :, None] * hidden_dim[..., None, :]}
  if has_bias:
    out["bias"] = hidden_dim
  return out


def _yw_to_w(
    hidden_dim: Array, trace: primitive.Trace, *, has_bias: bool, **_: Any
) -> primitive.Tree:
  out = {"weight": trace["weight"] * hidden_dim[..., None, :]}
  if has_bias:
    out["bias"] = trace["bias"] * hidden_dim
  return out


def _trace_to_dw(
    trace: primitive.Trace, weights: primitive.Weights, **_: Any
) -> primitive.Tree:
  return {
      k: primitive.sum_to_rank(v, weights[k].ndim) for k, v in trace.items()
  }


def _xy_to_dw(
    x: Array,
    hidden_dim: Array,
    weights: primitive.Weights,
    *,
    has_bias: bool,
    **_: Any,
) -> primitive.Tree:
  del weights
  x2 = jnp.reshape(x, (-1, x.shape[-1]))
  hd2 = jnp.reshape(hidden_dim, (-1, hidden_dim.shape[-1]))
  out = {"weight": jnp.einsum("bi,bo->io", x2, hd2)}
  if has_bias:
    out["bias"] = jnp.sum(hd2, axis=0)
  return out


def _init_drtrl(
    x_aval: primitive.Aval,
    y_aval: primitive.Aval,
    weight_avals: Mapping[str, primitive.Aval],
    num_hidden_state: int,
    *,
    has_bias: bool,
    **_: Any,
) -> primitive.Tree:
  lead = tuple(y_aval.shape[:-1])
  w_shape = tuple(weight_avals["weight"].shape)
  out = {
      "weight": jnp.zeros(lead + w_shape + (num_hidden_state,), y_aval.dtype)
  }
  if has_bias:
    out["bias"] = jnp.zeros(lead + (w_shape[1], num_hidden_state), y_aval.dtype)
  del x_aval
  return out


def _init_pp(
    x_aval: primitive.Aval,
    y_aval: primitive.Aval,
    weight_avals: Mapping[str, primitive.Aval],
    num_hidden_state: int,
    **_: Any,
) -> Array:
  del x_aval, weight_avals
  return jnp.zeros(tuple(y_aval.shape) + (num_hidden_state,), y_aval.dtype)


def _drtrl_update(
    trace: primitive.Trace,
    d: Array,
    d_f: Array,
    x: Array,
    weights: primitive.Weights,
    *,
    has_bias: bool,
    **_: Any,
) -> primitive.Tree:
  del weights
  out = {
      "weight": (
          primitive.mix_states(d[..., None, :, :, :], trace["weight"])
          + x[..., :, None, None] * d_f[..., None, :, :]
      )
  }
  if has_bias:
    out["bias"] = primitive.mix_states(d, trace["bias"]) + d_f
  return out


def _drtrl_solve(
    trace: primitive.Trace,
    g: Array,
    weights: primitive.Weights,
    *,
    has_bias: bool,
    **_: Any,
) -> primitive.Tree:
  w = primitive.weighted_state_sum(trace["weight"], g[..., None, :, :])
  out = {"weight": primitive.sum_to_rank(w, weights["weight"].ndim)}
  if has_bias:
    out["bias"] = primitive.sum_to_rank(
        primitive.weighted_state_sum(trace["bias"], g), 1
    )
  return out


def _drtrl_window(
    trace: primitive.Trace,
    phi: Array,
    cs: Array,
    xs: Array,
    weights: primitive.Weights,
    *,
    has_bias: bool,
    **_: Any,
) -> primitive.Tree:
  del weights
  # Time is the contracted axis of one batched matmul: (I x k)(k x O S).
  summed = jnp.einsum("t...i,t...os->...ios", xs.astype(cs.dtype), cs)
  out = {
      "weight": (
          primitive.mix_states(phi[..., None, :, :, :], trace["weight"])
          + summed
      )
  }
  if has_bias:
    out["bias"] = primitive.mix_states(phi, trace["bias"]) + jnp.sum(cs, 0)
  return out


_RULES = dict(
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

etp_batched_dense_p, etp_dense_p = primitive.register_primitive_pair(
    "dense",
    _dense_impl,
    _RULES,
    trainable_invars_fn=_trainable_invars,
    x_invar_index=0,
    input_free_keys=("bias",),
    tangent_impl=_dense_tangent_impl,
)


def dense(
    x: Any,
    w: Any,
    b: Optional[Any] = None,
    *,
    max_events: Optional[int] = None,
) -> Any:
  r"""ETP-routed affine map :math:`y = x W + b`.

  Args:
    x: input of shape ``(I,)`` or ``(B, I)``; may be a ``saiunit.Quantity``.
    w: weight of shape ``(I, O)``; may be a ``saiunit.Quantity``.
    b: optional bias of shape ``(O,)`` in the unit of ``x * w``.
    max_events: ``None``, or event-driven: while every sample has at most
      ``max_events`` nonzero inputs (spikes), ``y`` is summed from the rows
      of ``W`` at those inputs instead of a matmul (else the matmul runs);
      the same values and derivatives either way.

  Returns:
    ``y`` of shape ``(O,)`` or ``(B, O)``, carrying ``unit(x) * unit(w)``.

  Raises:
    ValueError: on wrong ranks or sizes, or a bias unit that does not match.

  >>> import jax.numpy as jnp
  >>> dense(jnp.ones((2, 3)), jnp.ones((3, 4))).shape
  (2, 4)
  """
  x_m, x_unit = units.split(x)
  w_m, w_unit = units.split(w)
  checks.assert_rank(
      w_m,
      2,
      custom_message=(
          f"Weight of dense must have rank 2, got shape {w_m.shape}."
      ),
  )
  checks.assert_rank(
      x_m,
      {1, 2},
      custom_message=(
          f"Input to dense must have rank 1 or 2, got shape {x_m.shape}."
      ),
  )
  if x_m.shape[-1] != w_m.shape[0]:
    raise ValueError(
        f"Input to dense has {x_m.shape[-1]} features but the weight expects "
        f"{w_m.shape[0]}: x shape {x_m.shape}, w shape {w_m.shape}."
    )
  unit = units.product(x_unit, w_unit)
  args: list["jax.typing.ArrayLike"] = [x_m, w_m]
  if b is not None:
    b_m = units.bias_mantissa(b, unit, "dense")
    checks.assert_shape(
        b_m,
        (w_m.shape[1],),
        custom_message=(
            f"Bias of dense must have shape ({w_m.shape[1]},), "
            f"got shape {jnp.shape(b_m)}."
        ),
    )
    args.append(b_m)
  max_events = sparse_lib.check_max_events(max_events, w_m.shape[0])
  prim = etp_batched_dense_p if x_m.ndim == 2 else etp_dense_p
  params: dict[str, Any] = dict(has_bias=b is not None)
  if max_events is not None:
    params["max_events"] = max_events
  y = prim.bind(*args, **params)
  return units.with_unit(y, unit)
