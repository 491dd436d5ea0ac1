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
r"""Embedding ETP primitive: ``y = table[ids]``, ``table`` trainable.

``ids`` are integers of any shape (a leading batch axis for the batched
op); ``y`` has their shape plus the table's width ``H``. The op's input is
the ids, and its rules act as a dense op on their one-hot rows would, never
forming the one-hot: the weight gradient is a scatter-add of the output
cotangent into the looked-up rows. An id outside ``[0, V)`` has an all-zero
one-hot row: where the ids are traced (under ``jit`` or a learner's
gradient) it looks up zeros and gives no row a gradient or a trace entry;
concrete ids out of range are refused.

The D-RTRL trace of the table has, at each lookup position ``p`` (the
output's positions, width excluded),

.. math::
  \epsilon^t[b, p, v, h, a] = \sum_c D^t[b, p, h, a, c]\,
    \epsilon^{t-1}[b, p, v, h, c] + [\mathrm{ids}^t[b, p] = v]\,
    D_f^t[b, p, h, a],

nonzero only for the rows ``v`` that sample ``b`` looked up at ``p`` since
its last reset. By default it is kept over the whole vocabulary ``V``
(``(B, *P, V, H, S)``). With ``max_rows=R`` it is kept per looked-up row:
``R`` slots per sample and position, ``(B, *P, R, H, S)``, with the row each
slot holds (``rows``, ``-1`` for a free slot). A row seen again reuses its
slot; a new row takes the first free one. This equals the vocabulary-wide
trace (exact wherever it is) while every sample sees at most ``R`` distinct
rows at a position between resets; a row that finds no free slot is left out
of the trace and counted (``overflow``, per sample and position), which
makes the gradient approximate from then on. The trace's own rules
(``drtrl_update``, ``drtrl_solve``) handle the slots; the generic rules
(RTRL's immediate Jacobian, cross-group traces, ES-D-RTRL) use the
vocabulary-wide form, and a relation kept per row is not a cross-group
source.
"""

from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.core import checks
from haiku_etp._src.core import primitive
from haiku_etp._src.core import units

Array = jax.Array


def _in_range(ids: Array, num_rows: int) -> Array:
  """Whether each id names a row of a table of ``num_rows`` rows."""
  valid = ids >= 0
  if num_rows <= jnp.iinfo(ids.dtype).max:
    valid = valid & (ids < num_rows)
  return valid


def _embedding_impl(
    ids: Array, table: Array, *, max_rows: Optional[int]
) -> Array:
  del max_rows
  rows = jnp.take(table, ids, axis=0, mode="clip")
  # An id out of range looks up zeros: no row is read, none gets a gradient.
  return jnp.where(_in_range(ids, table.shape[0])[..., None], rows, 0)


def _one_hot(ids: Array, num_rows: int, dtype: jax.typing.DTypeLike) -> Array:
  return jax.nn.one_hot(ids, num_rows, dtype=dtype)


def _xy_to_trace(
    ids: Array,
    hidden_dim: Array,
    weights: primitive.Weights,
    *,
    max_rows: Optional[int],
) -> primitive.Tree:
  del max_rows
  table = weights["weight"]
  rows = _one_hot(ids, table.shape[0], hidden_dim.dtype)
  return {"weight": rows[..., :, None] * hidden_dim[..., None, :]}


def _yw_to_w(
    hidden_dim: Array, trace: primitive.Trace, *, max_rows: Optional[int]
) -> primitive.Tree:
  del max_rows
  return {"weight": trace["weight"] * hidden_dim[..., None, :]}


def _trace_to_dw(
    trace: primitive.Trace,
    weights: primitive.Weights,
    *,
    max_rows: Optional[int],
) -> primitive.Tree:
  del max_rows
  return {"weight": primitive.sum_to_rank(trace["weight"], 2)}


def _scatter_rows(rows: Array, values: Array, num_rows: int) -> Array:
  """``(V, H)``: ``values`` ``(..., H)`` added into ``rows`` ``(...)``;
  negative rows (free slots) are dropped."""
  rows = jnp.reshape(rows, (-1,))
  values = jnp.reshape(values, (-1, values.shape[-1]))
  rows = jnp.where(rows < 0, num_rows, rows)
  out = jnp.zeros((num_rows, values.shape[-1]), values.dtype)
  return out.at[rows].add(values, mode="drop")


def _xy_to_dw(
    ids: Array,
    hidden_dim: Array,
    weights: primitive.Weights,
    *,
    max_rows: Optional[int],
) -> primitive.Tree:
  del max_rows
  table = weights["weight"]
  return {
      "weight": _scatter_rows(ids, hidden_dim, table.shape[0]).astype(
          table.dtype
      )
  }


def _init_drtrl(
    x_aval: primitive.Aval,
    y_aval: primitive.Aval,
    weight_avals: Mapping[str, primitive.Aval],
    num_hidden_state: int,
    *,
    max_rows: Optional[int],
) -> primitive.Tree:
  num_rows, width = weight_avals["weight"].shape
  lead = tuple(x_aval.shape)
  if max_rows is None:
    return {
        "weight": jnp.zeros(
            lead + (num_rows, width, num_hidden_state), y_aval.dtype
        )
    }
  return {
      "weight": jnp.zeros(
          lead + (max_rows, width, num_hidden_state), y_aval.dtype
      ),
      "rows": jnp.full(lead + (max_rows,), -1, jnp.int32),
      "overflow": jnp.zeros(lead, jnp.int32),
  }


def _init_pp(
    x_aval: primitive.Aval,
    y_aval: primitive.Aval,
    weight_avals: Mapping[str, primitive.Aval],
    num_hidden_state: int,
    **_: Any,
) -> Array:
  del x_aval, weight_avals
  return jnp.zeros(tuple(y_aval.shape) + (num_hidden_state,), y_aval.dtype)


def _assign(
    rows: Array, overflow: Array, ids: Array, max_rows: int, num_rows: int
) -> tuple[Array, Array, Array]:
  """One step's slots of a per-row trace: ``(slot, rows, overflow)``, the
  slot a one-hot over ``max_rows`` (none when every slot is taken, or for an
  id outside the table's ``num_rows`` rows, which looks nothing up)."""
  valid = _in_range(ids, num_rows)
  ids = ids.astype(rows.dtype)
  match = rows == ids[..., None]
  seen = jnp.any(match, axis=-1)
  free = rows < 0
  first_free = jnp.argmax(free, axis=-1)
  room = jnp.any(free, axis=-1)
  slot = (
      jnp.where(
          seen[..., None],
          match,
          (jnp.arange(max_rows) == first_free[..., None]) & room[..., None],
      )
      & valid[..., None]
  )
  return (
      slot,
      jnp.where(slot, ids[..., None], rows),
      overflow + (valid & ~seen & ~room).astype(jnp.int32),
  )


def _drtrl_update(
    trace: primitive.Trace,
    d: Array,
    d_f: Array,
    ids: Array,
    weights: primitive.Weights,
    *,
    max_rows: Optional[int],
) -> primitive.Tree:
  eps = trace["weight"]
  mixed = primitive.mix_states(d[..., None, :, :, :], eps)
  if max_rows is None:
    hit = _one_hot(ids, weights["weight"].shape[0], eps.dtype)
    return {"weight": mixed + hit[..., :, None, None] * d_f[..., None, :, :]}
  slot, rows, overflow = _assign(
      trace["rows"],
      trace["overflow"],
      ids,
      max_rows,
      weights["weight"].shape[0],
  )
  return {
      "weight": mixed
      + slot[..., None, None].astype(eps.dtype) * d_f[..., None, :, :],
      "rows": rows,
      "overflow": overflow,
  }


def _drtrl_window(
    trace: primitive.Trace,
    phi: Array,
    cs: Array,
    ids: Array,
    weights: primitive.Weights,
    *,
    max_rows: Optional[int],
) -> primitive.Tree:
  eps = trace["weight"]
  mixed = primitive.mix_states(phi[..., None, :, :, :], eps)
  if max_rows is None:
    hits = _one_hot(ids, weights["weight"].shape[0], cs.dtype)
    return {"weight": mixed + jnp.einsum("t...v,t...hs->...vhs", hits, cs)}

  # The slots each step takes (ints, cheap), then one contraction over time.
  num_rows = weights["weight"].shape[0]

  def body(
      carry: tuple[Array, Array], ids_t: Array
  ) -> tuple[tuple[Array, Array], Array]:
    slot, rows, overflow = _assign(*carry, ids_t, max_rows, num_rows)
    return (rows, overflow), slot

  (rows, overflow), slots = jax.lax.scan(
      body, (trace["rows"], trace["overflow"]), ids
  )
  summed = jnp.einsum("t...m,t...hs->...mhs", slots.astype(cs.dtype), cs)
  return {"weight": mixed + summed, "rows": rows, "overflow": overflow}


def _drtrl_solve(
    trace: primitive.Trace,
    g: Array,
    weights: primitive.Weights,
    *,
    max_rows: Optional[int],
) -> primitive.Tree:
  per_slot = primitive.weighted_state_sum(trace["weight"], g[..., None, :, :])
  table = weights["weight"]
  if max_rows is None:
    return {"weight": primitive.sum_to_rank(per_slot, 2)}
  return {
      "weight": _scatter_rows(trace["rows"], per_slot, table.shape[0]).astype(
          table.dtype
      )
  }


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


def _per_row(params: primitive.Params) -> bool:
  return params["max_rows"] is not None


etp_batched_embedding_p, etp_embedding_p = primitive.register_primitive_pair(
    "embedding",
    _embedding_impl,
    _RULES,
    trainable_invars_fn=lambda params: {"weight": 1},
    x_invar_index=0,
    own_trace_layout_fn=_per_row,
)


def embedding(
    ids: Any,
    table: Any,
    *,
    batched: bool = True,
    max_rows: Optional[int] = None,
) -> Any:
  r"""ETP-routed lookup ``y = table[ids]`` with a trainable ``table``.

  Args:
    ids: integer ids in ``[0, V)``, any shape; with ``batched`` (the
      default) the first axis is the batch. Traced ids (under ``jit``, in a
      learner's ``sequence_grad``) cannot be checked: one out of range
      (negative ones included) looks up a row of zeros and gives no row of
      ``table`` a gradient (nor a D-RTRL trace entry or per-row slot).
    table: ``(V, H)``; may be a ``saiunit.Quantity``.
    batched: whether ``ids`` has a leading batch axis.
    max_rows: ``None`` (D-RTRL's trace over the whole vocabulary), or the
      slots per sample and position of a trace kept per looked-up row (see
      the module docstring).

  Returns:
    ``y`` of shape ``ids.shape + (H,)``.

  Raises:
    ValueError: for non-integer ids, a table that is not rank 2, ids out of
      range (when they are concrete, outside ``jit``), or a bad
      ``max_rows``.

  >>> import jax.numpy as jnp
  >>> embedding(jnp.array([0, 2]), jnp.arange(6.0).reshape(3, 2)).tolist()
  [[0.0, 1.0], [4.0, 5.0]]
  """
  t_m, t_unit = units.split(table)
  ids = jnp.asarray(ids) if not isinstance(ids, jax.Array) else ids
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise ValueError(
        f"ids of embedding must be integers, got dtype {ids.dtype}; cast "
        "token ids with .astype(jnp.int32)."
    )
  checks.assert_rank(
      t_m,
      2,
      custom_message=(
          f"table of embedding must have rank 2 (V, H), got shape {t_m.shape}."
      ),
  )
  if batched and ids.ndim < 1:
    raise ValueError(
        "ids of a batched embedding need a leading batch axis, got a scalar; "
        "pass batched=False for one sample."
    )
  if not isinstance(ids, jax.core.Tracer):
    values = np.asarray(ids)
    if values.size and (values.min() < 0 or values.max() >= t_m.shape[0]):
      raise ValueError(
          f"ids of embedding must lie in [0, {t_m.shape[0]}) (the table's "
          f"rows), got values from {values.min()} to {values.max()}."
      )
  if max_rows is not None and (
      isinstance(max_rows, bool)
      or not isinstance(max_rows, (int, np.integer))
      or max_rows < 1
  ):
    raise ValueError(f"max_rows must be None or an int >= 1, got {max_rows!r}.")
  if max_rows is not None and max_rows >= t_m.shape[0]:
    max_rows = None  # every row fits: the vocabulary-wide trace is smaller.
  prim = etp_batched_embedding_p if batched else etp_embedding_p
  y = prim.bind(ids, t_m, max_rows=None if max_rows is None else int(max_rows))
  return units.with_unit(y, t_unit)
