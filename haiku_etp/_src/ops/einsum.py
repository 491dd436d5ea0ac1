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
r"""Einsum ETP primitive: ``y = einsum(spec, x, w)``, ``w`` trainable.

``spec`` is written for one sample, ``"X,W->Y"`` with one letter per axis
(``"hi,hio->ho"``: a weight per head; ``"pi,io->po"``: one weight shared by
every position ``p``). A batched input carries one more leading axis. Each
letter of ``W`` appears in ``X`` or ``Y``, and no letter repeats inside an
operand.

The D-RTRL trace of ``w`` has one slot per weight entry and output
position, over the letters ``U = W + (Y - W)``:

.. math::
  \epsilon^t[b, U, a] = \sum_c D^t[b, Y, a, c]\, \epsilon^{t-1}[b, U, c]
    + D_f^t[b, Y, a]\; \partial y[b, Y] / \partial w[W],

where ``dy/dw`` sums ``x`` over the letters of ``X`` in neither ``W`` nor
``Y``. A weight shared across output positions (``"pi,io->po"``) thus keeps
a slot per position, as the conv op does, which exactness needs; a weight
that indexes every output letter (``"hi,hio->ho"``) keeps the weight's own
shape per sample. The solve sums the slots over the batch and the output
letters outside ``W``.
"""

import string
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from haiku_etp._src.core import checks
from haiku_etp._src.core import primitive
from haiku_etp._src.core import units

Array = jax.Array


class Spec:
  """A parsed per-sample einsum spec ``"X,W->Y"`` (hashable)."""

  def __init__(self, spec: str):
    if not isinstance(spec, str):
      raise ValueError(
          f"spec of einsum must be a string 'X,W->Y', got {spec!r}."
      )
    text = spec.replace(" ", "")
    lhs, arrow, y = text.partition("->")
    x, comma, w = lhs.partition(",")
    if not arrow or not comma or "," in w:
      raise ValueError(
          "spec of einsum must be 'X,W->Y' with two operands and an explicit "
          f"output, got {spec!r}."
      )
    for what, sub in (("input", x), ("weight", w), ("output", y)):
      if not all(c in string.ascii_letters for c in sub):
        raise ValueError(
            f"spec of einsum: the {what} subscripts {sub!r} must be letters "
            "(no ellipsis)."
        )
      if len(set(sub)) != len(sub):
        raise ValueError(
            f"spec of einsum: the {what} subscripts {sub!r} repeat a letter."
        )
    if set(y) - set(x) - set(w):
      raise ValueError(
          f"spec of einsum: output letters {sorted(set(y) - set(x) - set(w))} "
          f"appear in no operand of {spec!r}."
      )
    if set(w) - set(x) - set(y):
      raise ValueError(
          f"spec of einsum: weight letters {sorted(set(w) - set(x) - set(y))} "
          f"appear in neither the input nor the output of {spec!r}; sum the "
          "weight outside the op."
      )
    self.x, self.w, self.y = x, w, y
    self.u = w + "".join(c for c in y if c not in w)
    used = set(x + w + y)
    self.batch = next(c for c in string.ascii_letters if c not in used)
    self.text = f"{x},{w}->{y}"

  def lead(self, n: int) -> str:
    """The batch letter if an operand has ``n`` more axes than its
    subscripts (one), else nothing."""
    return self.batch if n else ""

  def __hash__(self) -> int:
    return hash(self.text)

  def __eq__(self, other: object) -> bool:
    return isinstance(other, Spec) and other.text == self.text

  def __repr__(self) -> str:
    return f"Spec({self.text!r})"


def _einsum_impl(x: Array, w: Array, *, spec: Spec) -> Array:
  b = spec.lead(x.ndim - len(spec.x))
  return jnp.einsum(f"{b}{spec.x},{spec.w}->{b}{spec.y}", x, w)


def _extra(hidden_dim: Array, spec: Spec) -> str:
  return spec.lead(hidden_dim.ndim - len(spec.y))


def _xy_to_trace(
    x: Array, hidden_dim: Array, weights: primitive.Weights, *, spec: Spec
) -> primitive.Tree:
  del weights
  b = _extra(hidden_dim, spec)
  return {
      "weight": jnp.einsum(
          f"{b}{spec.x},{b}{spec.y}->{b}{spec.u}", x, hidden_dim
      )
  }


def _yw_to_w(
    hidden_dim: Array, trace: primitive.Trace, *, spec: Spec
) -> primitive.Tree:
  b = _extra(hidden_dim, spec)
  return {
      "weight": jnp.einsum(
          f"{b}{spec.u},{b}{spec.y}->{b}{spec.u}", trace["weight"], hidden_dim
      )
  }


def _trace_to_dw(
    trace: primitive.Trace, weights: primitive.Weights, *, spec: Spec
) -> primitive.Tree:
  del weights
  t = trace["weight"]
  b = spec.lead(t.ndim - len(spec.u))
  return {"weight": jnp.einsum(f"{b}{spec.u}->{spec.w}", t)}


def _xy_to_dw(
    x: Array, hidden_dim: Array, weights: primitive.Weights, *, spec: Spec
) -> primitive.Tree:
  del weights
  b = _extra(hidden_dim, spec)
  return {
      "weight": jnp.einsum(f"{b}{spec.x},{b}{spec.y}->{spec.w}", x, hidden_dim)
  }


def _free_letters(spec: Spec, n: int) -> str:
  """``n`` letters that no subscript of ``spec`` (nor its batch) uses."""
  used = set(spec.x + spec.w + spec.y + spec.batch)
  return "".join([c for c in string.ascii_letters if c not in used][:n])


def _drtrl_window(
    trace: primitive.Trace,
    phi: Array,
    cs: Array,
    xs: Array,
    weights: primitive.Weights,
    *,
    spec: Spec,
) -> primitive.Tree:
  del weights
  eps = trace["weight"]
  b = spec.lead(cs.ndim - 2 - len(spec.y))
  t, s, r = tuple(_free_letters(spec, 3))
  mixed = jnp.einsum(
      f"{b}{spec.y}{r}{s},{b}{spec.u}{s}->{b}{spec.u}{r}", phi, eps
  )
  summed = jnp.einsum(
      f"{t}{b}{spec.x},{t}{b}{spec.y}{r}->{b}{spec.u}{r}",
      xs.astype(cs.dtype),
      cs,
  )
  return {"weight": mixed + summed}


def _shape_of(letters: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
  return tuple(sizes[c] for c in letters)


def _sizes(
    y_aval: primitive.Aval,
    weight_avals: Mapping[str, primitive.Aval],
    spec: Spec,
) -> tuple[dict[str, int], tuple[int, ...]]:
  y_shape = tuple(y_aval.shape)
  lead = y_shape[: len(y_shape) - len(spec.y)]
  sizes = dict(zip(spec.y, y_shape[len(lead) :]))
  sizes.update(zip(spec.w, weight_avals["weight"].shape))
  return sizes, lead


def _init_drtrl(
    x_aval: primitive.Aval,
    y_aval: primitive.Aval,
    weight_avals: Mapping[str, primitive.Aval],
    num_hidden_state: int,
    *,
    spec: Spec,
) -> primitive.Tree:
  del x_aval
  sizes, lead = _sizes(y_aval, weight_avals, spec)
  return {
      "weight": jnp.zeros(
          lead + _shape_of(spec.u, sizes) + (num_hidden_state,), y_aval.dtype
      )
  }


def _init_pp(
    x_aval: primitive.Aval,
    y_aval: primitive.Aval,
    weight_avals: Mapping[str, primitive.Aval],
    num_hidden_state: int,
    *,
    spec: Spec,
) -> Array:
  del x_aval, weight_avals, spec
  return jnp.zeros(tuple(y_aval.shape) + (num_hidden_state,), y_aval.dtype)


_RULES = dict(
    yw_to_w=_yw_to_w,
    xy_to_dw=_xy_to_dw,
    xy_to_trace=_xy_to_trace,
    trace_to_dw=_trace_to_dw,
    init_drtrl=_init_drtrl,
    init_pp=_init_pp,
    drtrl_window=_drtrl_window,
)

etp_batched_einsum_p, etp_einsum_p = primitive.register_primitive_pair(
    "einsum",
    _einsum_impl,
    _RULES,
    trainable_invars_fn=lambda params: {"weight": 1},
    x_invar_index=0,
)


def einsum(spec: str, x: Any, w: Any) -> Any:
  r"""ETP-routed ``y = einsum(spec, x, w)`` with a trainable ``w``.

  Args:
    spec: ``"X,W->Y"`` for one sample, one letter per axis (``"hi,hio->ho"``
      multi-head weights; ``"pi,io->po"`` a weight shared by positions).
    x: input with the axes of ``X``, or one more leading batch axis; may be
      a ``saiunit.Quantity``.
    w: the weight, with the axes of ``W``; may be a ``saiunit.Quantity``.

  Returns:
    ``y`` with the axes of ``Y`` (after the batch axis if ``x`` has one).

  Raises:
    ValueError: for a malformed spec (see :class:`Spec`), or operands whose
      ranks or shared axis sizes do not fit it.

  >>> import jax.numpy as jnp
  >>> einsum("hi,hio->ho", jnp.ones((5, 2, 3)), jnp.ones((2, 3, 4))).shape
  (5, 2, 4)
  """
  parsed = Spec(spec)
  x_m, x_unit = units.split(x)
  w_m, w_unit = units.split(w)
  checks.assert_rank(
      w_m,
      len(parsed.w),
      custom_message=(
          f"Weight of einsum {parsed.text!r} must have rank {len(parsed.w)}, got "
          f"shape {w_m.shape}."
      ),
  )
  checks.assert_rank(
      x_m,
      {len(parsed.x), len(parsed.x) + 1},
      custom_message=(
          f"Input to einsum {parsed.text!r} must have rank {len(parsed.x)} (or "
          f"{len(parsed.x) + 1} with a batch axis), got shape {x_m.shape}."
      ),
  )
  batched = x_m.ndim == len(parsed.x) + 1
  sizes: dict[str, int] = {}
  for letters, shape, what in (
      (parsed.x, x_m.shape[int(batched) :], "input"),
      (parsed.w, w_m.shape, "weight"),
  ):
    for c, n in zip(letters, shape):
      if sizes.setdefault(c, n) != n:
        raise ValueError(
            f"einsum {parsed.text!r}: axis {c!r} has size {sizes[c]} in one "
            f"operand and {n} in the {what} (x shape {x_m.shape}, w shape "
            f"{w_m.shape})."
        )
  prim = etp_batched_einsum_p if batched else etp_einsum_p
  y = prim.bind(x_m, w_m, spec=parsed)
  return units.with_unit(y, units.product(x_unit, w_unit))
