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
r"""Convolution ETP primitive: the full surface of ``lax.conv_general_dilated``.

.. math::
  y_{b, s, k} = \sum_{u, c} x_{b, s + u, c}\, K_{u, c, k} + b_k

The input always carries a batch axis. ``dimension_numbers`` may be ``None``
(NCH/OIH, NCHW/OIHW, ...), a tuple of layout strings, or a
``lax.ConvDimensionNumbers``; every rule reads axes from it, and the bias is
added and reduced along the output layout's channel axis.

**Exact D-RTRL trace.** The kernel is shared across output positions while the
hidden Jacobian ``D`` acts per position, so a kernel-shaped trace summed over
positions is wrong whenever ``D`` is not the same at every position (summing a
decay over positions multiplies it by their number). The trace therefore keeps
one kernel-shaped slot per output position,

* ``weight``: ``(B, *spatial_out, *kernel.shape, S)`` (spatial axes in the
  logical order of ``out_spec``, kernel axes in the kernel's own layout; the
  output channel is the kernel's ``O`` axis, not a separate axis),
* ``bias``: ``(B, *spatial_out, O, S)``, the per-position cotangent,

and the spatial sum is deferred to the solve (``trace_to_dw``). With the batch
stripped the leading ``B`` is absent. The instantaneous term is built from
input patches, so its cost is that of one im2col of ``x``.

**ES-D-RTRL.** The input-side trace is ``x``-shaped and the output-side trace
``y``-shaped; ``xy_to_dw`` is the conv VJP at the filtered input.
"""

import itertools
import math
from typing import Any, Mapping, Optional, Sequence, Union

import jax
from jax import lax
import jax.numpy as jnp

from haiku_etp._src.core import checks
from haiku_etp._src.core import backend
from haiku_etp._src.core import primitive
from haiku_etp._src.core import units

Array = jax.Array
DimensionNumbers = Union[None, Sequence[str], lax.ConvDimensionNumbers]
Padding = Union[str, Sequence[tuple[int, int]]]


def conv_dimension_numbers(
    dimension_numbers: DimensionNumbers, num_spatial: int
) -> lax.ConvDimensionNumbers:
  """Normalises any accepted ``dimension_numbers`` form to specs."""
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return dimension_numbers
  ones = (1,) * (num_spatial + 2)
  return lax.conv_dimension_numbers(ones, ones, dimension_numbers)


def _dn(params: primitive.Params) -> lax.ConvDimensionNumbers:
  return conv_dimension_numbers(
      params["dimension_numbers"], len(params["strides"])
  )


def _conv(x: Array, kernel: Array, params: primitive.Params) -> Array:
  return lax.conv_general_dilated(
      x,
      kernel,
      window_strides=params["strides"],
      padding=params["padding"],
      lhs_dilation=params["lhs_dilation"],
      rhs_dilation=params["rhs_dilation"],
      dimension_numbers=params["dimension_numbers"],
      feature_group_count=params["feature_group_count"],
      batch_group_count=params["batch_group_count"],
  )


def _bias_shape(ndim: int, channel_axis: int, size: int) -> tuple[int, ...]:
  return tuple(size if i == channel_axis else 1 for i in range(ndim))


def _conv_impl(
    x: Array, kernel: Array, *bias: Array, has_bias: bool, **params: Any
) -> Array:
  y = _conv(x, kernel, params)
  if has_bias:
    channel_axis = _dn(params).out_spec[1]
    y = y + jnp.reshape(
        bias[0], _bias_shape(y.ndim, channel_axis, bias[0].shape[0])
    )
  return y


def _trainable_invars(params: primitive.Params) -> dict[str, int]:
  return {"weight": 1, "bias": 2} if params["has_bias"] else {"weight": 1}


def _batch_axes(params: primitive.Params) -> Optional[tuple[int, int]]:
  if params["batch_group_count"] != 1:
    return None
  dn = _dn(params)
  return dn.lhs_spec[0], dn.out_spec[0]


class _Layout:
  """Axis bookkeeping for one call, batch kept or stripped."""

  def __init__(self, params: primitive.Params, kept: bool):
    self.dn = _dn(params)
    self.n = len(params["strides"])
    self.kept = kept
    out_spec = self.dn.out_spec
    if kept:
      renum = lambda a: a
    else:
      renum = lambda a: a - (a > out_spec[0])
    self.channel_axis = renum(out_spec[1])
    self.spatial_axes = tuple(renum(a) for a in out_spec[2:])
    # Permutation from y's physical layout to (B?, *spatial, C).
    self.to_canonical = (
        ((out_spec[0],) if kept else ())
        + self.spatial_axes
        + (self.channel_axis,)
    )
    self.lead = self.n + (1 if kept else 0)

  def y_to_canonical(self, y: Array, extra: int = 0) -> Array:
    """Transposes a y-shaped array (``extra`` trailing axes) to ``(B?, *sp, C)``."""
    perm = self.to_canonical + tuple(range(y.ndim - extra, y.ndim))
    return jnp.transpose(y, perm)

  def y_to_kernel_slots(
      self, y: Array, kernel_ndim: int, extra: int = 0
  ) -> Array:
    """Moves a y-shaped array (plus ``extra`` trailing axes) to trace layout.

    The result has shape ``(B?, *spatial, *k)`` where ``k`` has the kernel's
    rank, size ``C`` on the kernel's ``O`` axis and 1 elsewhere.
    """
    y = self.y_to_canonical(y, extra)
    lead_shape = y.shape[: self.lead]
    channels = y.shape[self.lead]
    k_shape = _bias_shape(kernel_ndim, self.dn.rhs_spec[0], channels)
    return jnp.reshape(y, lead_shape + k_shape + y.shape[self.lead + 1 :])


def _is_kept(params: primitive.Params, y_like: Array) -> bool:
  return y_like.ndim == len(params["strides"]) + 2


def _sliced_patches(
    x: Array, filter_shape: tuple[int, ...], params: primitive.Params
) -> Array:
  """:func:`_input_patches` by slicing the padded input, one slice per
  filter offset (no lhs dilation): pure data movement, where the library's
  patches are a convolution with a one-hot kernel."""
  dn = _dn(params)
  n = len(filter_shape)
  lhs = dn.lhs_spec
  xc = jnp.transpose(x, (lhs[0],) + tuple(lhs[2:]) + (lhs[1],))
  in_sp = xc.shape[1 : 1 + n]
  strides = params["strides"]
  rate = params["rhs_dilation"] or (1,) * n
  extent = [(f - 1) * d + 1 for f, d in zip(filter_shape, rate)]
  padding = params["padding"]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(in_sp, extent, strides, padding)
  pads = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in padding] + [(0, 0, 0)]
  xc = lax.pad(xc, jnp.zeros((), xc.dtype), pads)
  out_sp = [
      (size + lo + hi - e) // st + 1
      for size, (lo, hi), e, st in zip(in_sp, padding, extent, strides)
  ]
  slices = []
  for offset in itertools.product(*(range(f) for f in filter_shape)):
    start = [0] + [o * d for o, d in zip(offset, rate)] + [0]
    limit = (
        [xc.shape[0]]
        + [b + (m - 1) * st + 1 for b, m, st in zip(start[1:], out_sp, strides)]
        + [xc.shape[-1]]
    )
    slices.append(lax.slice(xc, start, limit, [1] + list(strides) + [1]))
  p = jnp.stack(slices, axis=-1)  # (B, *out, C, prod(filter))
  return jnp.reshape(p, p.shape[:-1] + tuple(filter_shape))


def _input_patches(
    x: Array, kernel_shape: Sequence[int], params: primitive.Params
) -> Array:
  """``(B, *spatial_out, C, *filter)``: per output position, the input
  values under the filter (every input channel ``C``, batch kept)."""
  dn = _dn(params)
  n = len(params["strides"])
  filter_shape = tuple(kernel_shape[a] for a in dn.rhs_spec[2:])
  if all(d == 1 for d in params["lhs_dilation"] or ()):
    return _sliced_patches(x, filter_shape, params)
  p = lax.conv_general_dilated_patches(
      x,
      filter_shape,
      window_strides=params["strides"],
      padding=params["padding"],
      lhs_dilation=params["lhs_dilation"],
      rhs_dilation=params["rhs_dilation"],
      dimension_numbers=dn,
      precision=lax.Precision.HIGHEST,
  )
  # p: physical output layout with features ordered (channel, *filter).
  out_spec = dn.out_spec
  p = jnp.transpose(p, (out_spec[0],) + tuple(out_spec[2:]) + (out_spec[1],))
  batch, spatial = p.shape[0], p.shape[1 : 1 + n]
  channels = p.shape[-1] // max(1, math.prod(filter_shape))
  return jnp.reshape(p, (batch,) + spatial + (channels,) + filter_shape)


def _to_physical_kernel(
    p: Array, lead: int, n: int, rhs_spec: Sequence[int]
) -> Array:
  """Moves the kernel axes of ``p`` (logical order ``(O, I, *filter)``
  after ``lead`` axes; any trailing axes stay last) to the kernel's
  physical order."""
  perm = (
      tuple(range(lead))
      + tuple(lead + rhs_spec.index(a) for a in range(n + 2))
      + tuple(range(lead + n + 2, p.ndim))
  )
  return jnp.transpose(p, perm)


def _patches(
    x: Array, kernel_shape: Sequence[int], params: primitive.Params
) -> Array:
  """Per-position kernel Jacobian ``dy[b, s, o] / dK[...]`` (batch kept).

  Returns ``(B_out, *spatial_out, *kernel_shape)``: the slot of output position
  ``s`` holds, at kernel index ``(.., i, .., o, ..)``, the input value that
  multiplies that kernel entry in ``y[b, s, o]``.
  """
  dn = _dn(params)
  n = len(params["strides"])
  rhs_spec = dn.rhs_spec
  filter_shape = tuple(kernel_shape[a] for a in rhs_spec[2:])
  num_out = kernel_shape[rhs_spec[0]]
  num_in = kernel_shape[rhs_spec[1]]
  p = _input_patches(x, kernel_shape, params)
  batch, spatial = p.shape[0], p.shape[1 : 1 + n]
  fgc = params["feature_group_count"]
  bgc = params["batch_group_count"]
  if bgc > 1:
    # The input batch is split group-major; output channel o reads group
    # o // (O / bgc).
    p = jnp.reshape(p, (bgc, batch // bgc) + p.shape[1:])
    p = jnp.moveaxis(p, 0, 1 + n)  # (B_out, *sp, G, C, *filter)
    groups, per_group = bgc, num_out // bgc
  else:
    # Channels split into feature groups; output channel o reads group
    # o // (O / fgc).
    p = jnp.reshape(p, (batch,) + spatial + (fgc, num_in) + filter_shape)
    groups, per_group = fgc, num_out // fgc
  g_axis = p.ndim - n - 2
  p = jnp.expand_dims(p, g_axis + 1)
  p = jnp.broadcast_to(
      p, p.shape[: g_axis + 1] + (per_group,) + p.shape[g_axis + 2 :]
  )
  p = jnp.reshape(
      p, p.shape[:g_axis] + (groups * per_group,) + p.shape[g_axis + 2 :]
  )
  # p: (B_out, *sp, O, I, *filter) in logical kernel order; go physical.
  return _to_physical_kernel(p, 1 + n, n, rhs_spec)


def _window_weight(
    xs: Array,
    cs: Array,
    kernel_shape: Sequence[int],
    params: primitive.Params,
    kept: bool,
) -> Array:
  """``sum_t patches_t (x) c_t`` in trace layout ``(B?, *sp, *kernel, S')``
  for a conv without feature or batch groups: both factors are laid out
  in the kernel's physical order with unit axes where the other has its
  own (the patches have no output-channel axis, ``c`` no input axes), so
  one fused product-and-sum over the steps writes the trace directly."""
  dn = _dn(params)
  n = len(params["strides"])
  rhs_spec = dn.rhs_spec
  k, b_axis = xs.shape[0], dn.lhs_spec[0]
  # The steps become the batch (batch stripped) or join it, step-major.
  x = jnp.moveaxis(xs, 0, b_axis)
  if kept:
    x = jnp.reshape(x, x.shape[:b_axis] + (-1,) + x.shape[b_axis + 2 :])
  p = _input_patches(x.astype(cs.dtype), kernel_shape, params)
  layout = _Layout(params, kept)
  c = jax.vmap(lambda c_t: layout.y_to_canonical(c_t, extra=1))(cs)
  lead_shape = c.shape[1:-2]  # (B?, *spatial_out)
  lead = len(lead_shape)
  # p: (k, *lead, I, *filter), logical kernel axes 1.. -> physical order,
  # with a unit axis where the kernel has O.
  p = jnp.reshape(p, (k,) + lead_shape + p.shape[1 + n :])
  logical = sorted(range(1, n + 2), key=lambda a: rhs_spec[a])
  p = jnp.transpose(
      p, tuple(range(1 + lead)) + tuple(1 + lead + a - 1 for a in logical)
  )
  p = jnp.expand_dims(p, (1 + lead + rhs_spec[0], p.ndim + 1))
  # c: (k, *lead, O, S') -> O at its physical place, units elsewhere.
  o_shape = [1] * (n + 2)
  o_shape[rhs_spec[0]] = c.shape[-2]
  c = jnp.reshape(c, (k,) + lead_shape + tuple(o_shape) + (c.shape[-1],))
  # The matrices per position are small: a fused product-and-sum over the
  # steps beats a batched matmul there. Both operands are kept in memory:
  # fused into their producers, XLA would build the whole product first.
  p, c = backend.materialize((p, c))
  return jnp.sum(p * c, axis=0)


def _with_batch(x: Array, params: primitive.Params) -> Array:
  """Gives one sample's ``x`` back a unit batch axis (batch stripped)."""
  if params["batch_group_count"] != 1:
    raise ValueError(
        "Conv rules with the batch stripped need batch_group_count == 1, got "
        f"{params['batch_group_count']}."
    )
  return jnp.expand_dims(x, _dn(params).lhs_spec[0])


def _instantaneous_weight(
    x: Array,
    d_f: Array,
    kernel_shape: Sequence[int],
    params: primitive.Params,
    extra: int,
) -> Array:
  """``D_f (x) patches`` in trace layout; ``d_f`` has ``extra`` trailing axes."""
  kept = d_f.ndim - extra == len(params["strides"]) + 2
  if kept:
    patches = _patches(x, kernel_shape, params)
  else:
    patches = _patches(_with_batch(x, params), kernel_shape, params)[0]
  layout = _Layout(params, kept)
  d_f_w = layout.y_to_kernel_slots(d_f, len(kernel_shape), extra)
  return patches.reshape(patches.shape + (1,) * extra) * d_f_w


def _xy_to_trace(
    x: Array,
    hidden_dim: Array,
    weights: primitive.Weights,
    *,
    has_bias: bool,
    **params: Any,
) -> primitive.Tree:
  kernel_shape = weights["weight"].shape
  out = {
      "weight": _instantaneous_weight(
          x, hidden_dim, kernel_shape, params, extra=0
      )
  }
  if has_bias:
    out["bias"] = _Layout(params, _is_kept(params, hidden_dim)).y_to_canonical(
        hidden_dim
    )
  return out


def _yw_to_w(
    hidden_dim: Array, trace: primitive.Trace, *, has_bias: bool, **params: Any
) -> primitive.Tree:
  layout = _Layout(params, _is_kept(params, hidden_dim))
  kernel_ndim = trace["weight"].ndim - layout.lead
  out = {
      "weight": (
          trace["weight"] * layout.y_to_kernel_slots(hidden_dim, kernel_ndim)
      )
  }
  if has_bias:
    out["bias"] = trace["bias"] * layout.y_to_canonical(hidden_dim)
  return out


def _reduce_bias(y_like: Array, params: primitive.Params) -> Array:
  """Sums a y-shaped array over everything but the layout's channel axis."""
  layout = _Layout(params, _is_kept(params, y_like))
  return primitive.sum_leading(layout.y_to_canonical(y_like), layout.lead)


def _trace_to_dw(
    trace: primitive.Trace,
    weights: primitive.Weights,
    *,
    has_bias: bool,
    **params: Any,
) -> primitive.Tree:
  w = trace["weight"]
  out = {"weight": primitive.sum_leading(w, w.ndim - weights["weight"].ndim)}
  if has_bias:
    b = trace["bias"]
    out["bias"] = primitive.sum_leading(b, b.ndim - 1)
  return out


def _xy_to_dw(
    x: Array,
    hidden_dim: Array,
    weights: primitive.Weights,
    *,
    has_bias: bool,
    **params: Any,
) -> primitive.Tree:
  if _is_kept(params, hidden_dim):
    hd = hidden_dim
  else:
    x = _with_batch(x, params)
    hd = jnp.expand_dims(hidden_dim, _dn(params).out_spec[0])
  _, vjp = jax.vjp(lambda k: _conv(x, k, params), weights["weight"])
  out = {"weight": vjp(hd.astype(jnp.result_type(x, weights["weight"])))[0]}
  if has_bias:
    out["bias"] = _reduce_bias(hidden_dim, params)
  return out


def _spatial_out(
    y_shape: Sequence[int], params: primitive.Params
) -> tuple[int, ...]:
  layout = _Layout(params, len(y_shape) == len(params["strides"]) + 2)
  lead = (y_shape[_dn(params).out_spec[0]],) if layout.kept else ()
  return lead + tuple(y_shape[a] for a in layout.spatial_axes)


def _init_drtrl(
    x_aval: primitive.Aval,
    y_aval: primitive.Aval,
    weight_avals: Mapping[str, primitive.Aval],
    num_hidden_state: int,
    *,
    has_bias: bool,
    **params: Any,
) -> primitive.Tree:
  del x_aval
  y_shape = tuple(y_aval.shape)
  w_shape = tuple(weight_avals["weight"].shape)
  out = {
      "weight": jnp.zeros(
          _spatial_out(y_shape, params) + w_shape + (num_hidden_state,),
          y_aval.dtype,
      )
  }
  if has_bias:
    num_out = w_shape[_dn(params).rhs_spec[0]]
    out["bias"] = jnp.zeros(
        _spatial_out(y_shape, params) + (num_out, num_hidden_state),
        y_aval.dtype,
    )
  return out


def _init_pp(
    x_aval: primitive.Aval,
    y_aval: primitive.Aval,
    weight_avals: Mapping[str, primitive.Aval],
    num_hidden_state: int,
    *,
    has_bias: bool,
    **params: Any,
) -> Array:
  del x_aval, weight_avals, has_bias, params
  return jnp.zeros(tuple(y_aval.shape) + (num_hidden_state,), y_aval.dtype)


def _drtrl_update(
    trace: primitive.Trace,
    d: Array,
    d_f: Array,
    x: Array,
    weights: primitive.Weights,
    *,
    has_bias: bool,
    **params: Any,
) -> primitive.Tree:
  kernel_shape = weights["weight"].shape
  layout = _Layout(params, d_f.ndim - 1 == len(params["strides"]) + 2)
  d_w = layout.y_to_kernel_slots(d, len(kernel_shape), extra=2)
  out = {
      "weight": (
          primitive.mix_states(d_w, trace["weight"])
          + _instantaneous_weight(x, d_f, kernel_shape, params, extra=1)
      )
  }
  if has_bias:
    out["bias"] = primitive.mix_states(
        layout.y_to_canonical(d, extra=2), trace["bias"]
    ) + layout.y_to_canonical(d_f, extra=1)
  return out


def _drtrl_solve(
    trace: primitive.Trace,
    g: Array,
    weights: primitive.Weights,
    *,
    has_bias: bool,
    **params: Any,
) -> primitive.Tree:
  kernel_shape = weights["weight"].shape
  layout = _Layout(params, g.ndim - 1 == len(params["strides"]) + 2)
  g_w = layout.y_to_kernel_slots(g, len(kernel_shape), extra=1)
  w = primitive.weighted_state_sum(trace["weight"], g_w)
  out = {"weight": primitive.sum_leading(w, layout.lead)}
  if has_bias:
    b = primitive.weighted_state_sum(
        trace["bias"], layout.y_to_canonical(g, extra=1)
    )
    out["bias"] = primitive.sum_leading(b, b.ndim - 1)
  return out


def _drtrl_window(
    trace: primitive.Trace,
    phi: Array,
    cs: Array,
    xs: Array,
    weights: primitive.Weights,
    *,
    has_bias: bool,
    **params: Any,
) -> primitive.Tree:
  kernel_shape = weights["weight"].shape
  layout = _Layout(params, cs.ndim - 2 == len(params["strides"]) + 2)
  phi_w = layout.y_to_kernel_slots(phi, len(kernel_shape), extra=2)
  if params["batch_group_count"] == params["feature_group_count"] == 1:
    summed = _window_weight(xs, cs, kernel_shape, params, layout.kept)
  else:
    step = lambda x, c: _instantaneous_weight(x, c, kernel_shape, params, 1)
    summed = jnp.sum(jax.vmap(step)(xs, cs), axis=0)
  out = {"weight": primitive.mix_states(phi_w, trace["weight"]) + summed}
  if has_bias:
    out["bias"] = primitive.mix_states(
        layout.y_to_canonical(phi, extra=2), trace["bias"]
    ) + layout.y_to_canonical(jnp.sum(cs, axis=0), extra=1)
  return out


etp_conv_p = primitive.register_primitive(
    "etp_conv",
    _conv_impl,
    batched=True,
    trainable_invars_fn=_trainable_invars,
    x_invar_index=0,
    input_free_keys=("bias",),
    batch_axes_fn=_batch_axes,
)
etp_conv_p.register_etp_rules(
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


_PADDING_STRINGS = ("SAME", "SAME_LOWER", "VALID")


def normalise_padding(
    padding: Padding, num_spatial: int
) -> Union[str, tuple[tuple[int, int], ...]]:
  """Returns a padding string or a tuple of ``num_spatial`` int pairs."""
  if isinstance(padding, str):
    if padding.upper() not in _PADDING_STRINGS:
      raise ValueError(
          f"padding must be one of {_PADDING_STRINGS} or "
          f"(low, high) pairs, got {padding!r}."
      )
    return padding.upper()
  try:
    pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
  except (TypeError, ValueError):
    raise ValueError(
        "padding must be a string or a sequence of (low, high) pairs, got "
        f"{padding!r}."
    ) from None
  if len(pairs) != num_spatial:
    raise ValueError(
        f"padding must have {num_spatial} (low, high) pairs for a "
        f"{num_spatial}-D conv, got {padding!r}."
    )
  return pairs


def _normalise_dn(
    dimension_numbers: DimensionNumbers,
) -> Union[None, tuple[str, ...], lax.ConvDimensionNumbers]:
  if dimension_numbers is None or isinstance(
      dimension_numbers, lax.ConvDimensionNumbers
  ):
    return dimension_numbers
  return tuple(dimension_numbers)


def _optional_tuple(
    value: Optional[Sequence[int]], n: int, what: str
) -> Optional[tuple[int, ...]]:
  if value is None:
    return None
  value = tuple(int(v) for v in value)
  if len(value) != n:
    raise ValueError(
        f"{what} must have {n} entries for a {n}-D conv, got {value}."
    )
  return value


def _layout(
    dimension_numbers: DimensionNumbers, dn: lax.ConvDimensionNumbers
) -> str:
  """The data format as the caller gave it, for messages."""
  if dimension_numbers is None:
    return (
        "the default layout (input N, C, spatial...; kernel O, I, spatial...)"
    )
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return f"dimension_numbers {dn}"
  return f"data format {tuple(dimension_numbers)}"


def _check_channels(
    x_shape: Sequence[int],
    k_shape: Sequence[int],
    params: primitive.Params,
    dimension_numbers: DimensionNumbers,
) -> None:
  """Raises ``ValueError`` when the kernel's channels do not fit ``x``."""
  dn = _dn(params)
  groups = params["feature_group_count"]
  batch_groups = params["batch_group_count"]
  x_channels = x_shape[dn.lhs_spec[1]]
  k_in, k_out = k_shape[dn.rhs_spec[1]], k_shape[dn.rhs_spec[0]]
  layout = _layout(dimension_numbers, dn)
  if groups < 1 or batch_groups < 1:
    raise ValueError(
        "feature_group_count and batch_group_count must be >= 1, got "
        f"{groups} and {batch_groups}."
    )
  if k_in * groups != x_channels:
    raise ValueError(
        f"conv: the kernel has {k_in} input channels (axis "
        f"{dn.rhs_spec[1]} of kernel shape {tuple(k_shape)}) and "
        f"feature_group_count is {groups}, so the input must have "
        f"{k_in * groups} channels, but it has {x_channels} (axis "
        f"{dn.lhs_spec[1]} of input shape {tuple(x_shape)}), in {layout}. "
        "Make the kernel's input channels the input's channels divided by "
        "feature_group_count, or check the data format."
    )
  if k_out % groups or k_out % batch_groups:
    raise ValueError(
        f"conv: the kernel's {k_out} output channels (axis {dn.rhs_spec[0]} "
        f"of kernel shape {tuple(k_shape)}) must be divisible by "
        f"feature_group_count {groups} and batch_group_count {batch_groups}, "
        f"in {layout}."
    )
  if x_shape[dn.lhs_spec[0]] % batch_groups:
    raise ValueError(
        f"conv: the input's batch {x_shape[dn.lhs_spec[0]]} must be divisible "
        f"by batch_group_count {batch_groups}."
    )


def conv(
    x: Any,
    kernel: Any,
    bias: Optional[Any] = None,
    *,
    strides: Optional[Sequence[int]] = None,
    padding: Union[str, Sequence[tuple[int, int]]] = "SAME",
    lhs_dilation: Optional[Sequence[int]] = None,
    rhs_dilation: Optional[Sequence[int]] = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    dimension_numbers: DimensionNumbers = None,
) -> Any:
  r"""ETP-routed N-D convolution with an optional per-channel bias.

  Same arguments and semantics as ``jax.lax.conv_general_dilated`` (``strides``
  is its ``window_strides``). The bias has one entry per output channel and is
  added along the output layout's channel axis.

  Args:
    x: input with a batch axis; may be a ``saiunit.Quantity``.
    kernel: kernel in the layout given by ``dimension_numbers``; may be a
      ``saiunit.Quantity``.
    bias: optional ``(O,)`` bias in the unit of ``x * kernel``.
    strides: window strides; defaults to 1 per spatial axis.
    padding: ``"SAME"``, ``"VALID"``, ``"SAME_LOWER"`` or ``(low, high)``
      pairs.
    lhs_dilation: input dilation per spatial axis.
    rhs_dilation: kernel dilation per spatial axis.
    feature_group_count: number of feature groups.
    batch_group_count: number of batch groups.
    dimension_numbers: ``None``, layout strings such as
      ``("NHWC", "HWIO", "NHWC")``, or a ``lax.ConvDimensionNumbers``.

  Returns:
    The convolution output, carrying ``unit(x) * unit(kernel)``.

  Raises:
    ValueError: on ranks that disagree, kernel input channels (times
      ``feature_group_count``) that are not the input's channels, a bias of
      the wrong size or unit, malformed arguments, or an empty output (a
      kernel larger than a ``VALID``-padded input).

  >>> import jax.numpy as jnp
  >>> conv(jnp.ones((8, 3, 16)), jnp.ones((4, 3, 5))).shape
  (8, 4, 16)
  """
  x_m, x_unit = units.split(x)
  k_m, k_unit = units.split(kernel)
  if x_m.ndim < 3 or x_m.ndim != k_m.ndim:
    raise ValueError(
        "conv needs an input with a batch axis, a channel axis and at least "
        "one spatial axis, and a kernel of the same rank; got x shape "
        f"{x_m.shape} and kernel shape {k_m.shape}."
    )
  n = x_m.ndim - 2
  strides = (1,) * n if strides is None else tuple(int(s) for s in strides)
  if len(strides) != n:
    raise ValueError(
        f"strides must have {n} entries for a {n}-D conv, got {strides}."
    )
  params = dict(
      strides=strides,
      padding=normalise_padding(padding, n),
      lhs_dilation=_optional_tuple(lhs_dilation, n, "lhs_dilation"),
      rhs_dilation=_optional_tuple(rhs_dilation, n, "rhs_dilation"),
      feature_group_count=int(feature_group_count),
      batch_group_count=int(batch_group_count),
      dimension_numbers=_normalise_dn(dimension_numbers),
  )
  _check_channels(x_m.shape, k_m.shape, params, dimension_numbers)
  out = jax.eval_shape(
      lambda a, b: _conv(a, b, params),
      jax.ShapeDtypeStruct(x_m.shape, x_m.dtype),
      jax.ShapeDtypeStruct(k_m.shape, k_m.dtype),
  )
  if 0 in out.shape:
    raise ValueError(
        f"conv of an input of shape {x_m.shape} with a kernel of shape "
        f"{k_m.shape} (padding {params['padding']}, strides {strides}) has "
        f"an empty output {out.shape}: the kernel does not fit the input. "
        "Use SAME padding, a smaller kernel or dilation, or a larger input."
    )
  unit = units.product(x_unit, k_unit)
  args: list["jax.typing.ArrayLike"] = [x_m, k_m]
  if bias is not None:
    b_m = units.bias_mantissa(bias, unit, "conv")
    num_out = k_m.shape[_dn(params).rhs_spec[0]]
    checks.assert_shape(
        b_m,
        (num_out,),
        custom_message=(
            f"Bias of conv must have shape ({num_out},), got shape "
            f"{jnp.shape(b_m)}."
        ),
    )
    args.append(b_m)
  y = etp_conv_p.bind(*args, has_bias=bias is not None, **params)
  return units.with_unit(y, unit)
