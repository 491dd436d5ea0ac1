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
r"""Sparse ETP primitive: ``y = x @ W (+ b)`` with ``W`` given on its synapses.

The connectivity is structural and static: a :class:`Connectivity` lists the
``nnz`` synapses as (input row, output column) pairs, and the trainable
operand is the vector of their weights, ``(nnz,)``:

.. math::
  y[b, o] = \sum_{k:\ \mathrm{col}_k = o} x[b, \mathrm{row}_k]\, w_k + b_o.

Every rule works on synapses, so nothing of size ``I x O`` is formed. The
D-RTRL trace of the weights is ``(B, nnz, S)``: synapse ``k`` feeds only
output ``col_k``, so its trace is the dense op's entry ``(row_k, col_k)``,

.. math::
  \epsilon^t[b, k, a] = \sum_c D^t[b, \mathrm{col}_k, a, c]\,
    \epsilon^{t-1}[b, k, c] + D_f^t[b, \mathrm{col}_k, a]\,
    x^t[b, \mathrm{row}_k],

and the dense op's trace restricted to the synapses (exact wherever the dense
op is). ES-D-RTRL keeps its input- and output-sized traces, ``(B, I)`` and
``(B, O, S)``. The forward pass gathers the inputs of the synapses and sums
them per output (a segment sum), ``B x nnz`` products.

With ``max_events`` the input is taken as events (spikes: mostly zeros):
per sample the nonzero inputs are listed (at most ``max_events`` of them)
and only their synapses are summed, through the synapses sorted by input
row. Where more inputs are nonzero the ordinary sum runs instead (one
``lax.cond`` on the batch's largest count), so the result never depends on
the bound; the derivatives are the ordinary sum's. Only the cost differs
(``experiments.event_benchmark`` measures where it wins).

The connectivity is a static property of the op (a primitive parameter,
hashable), which the rules index with. The forward pass and its derivatives
use ``jax.experimental.sparse``'s compressed-sparse-rows product (``W^T``,
rows = outputs, built from the static indices), which on XLA:CPU runs 20x
faster than the gather and segment sum of ``B x nnz`` products (and than
its ``BCOO`` product, which lowers to those).
"""

import hashlib
from typing import Any, Mapping, Optional, Sequence

import jax
from jax import lax
from jax.experimental import sparse as jsparse
from jax.extend import core as jex_core
from jax.interpreters import ad
from jax.interpreters import batching
from jax.interpreters import mlir
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.core import checks
from haiku_etp._src.core import primitive
from haiku_etp._src.core import units

Array = jax.Array


class Connectivity:
  """The synapses of a sparse weight matrix of shape ``(I, O)``, static.

  Synapse ``k`` connects input ``rows[k]`` to output ``cols[k]``; the
  synapses are kept sorted by output then input, without duplicates.
  Hashable and compared by content, so that it can be a parameter of a JAX
  primitive.

  >>> import numpy as np
  >>> c = Connectivity.from_mask(np.eye(3, dtype=bool))
  >>> c.nnz, c.shape
  (3, (3, 3))
  """

  def __init__(self, rows: Any, cols: Any, shape: Sequence[int]):
    """Builds the connectivity from synapse coordinates.

    Args:
      rows: integer input index of each synapse, ``(nnz,)``.
      cols: integer output index of each synapse, ``(nnz,)``.
      shape: ``(num_inputs, num_outputs)``.

    Raises:
      ValueError: for non-integer indices, indices out of range, rows and
        cols of different lengths, repeated synapses, or a bad shape.
    """
    shape = tuple(shape)
    if len(shape) != 2 or not all(
        isinstance(s, (int, np.integer)) and s > 0 for s in shape
    ):
      raise ValueError(
          f"Connectivity shape must be two positive ints, got {shape!r}."
      )
    self.shape = (int(shape[0]), int(shape[1]))
    arrays = []
    for what, v, size in (("rows", rows, shape[0]), ("cols", cols, shape[1])):
      a = np.asarray(v)
      checks.assert_rank(
          a,
          1,
          custom_message=(
              f"Connectivity {what} must be a vector, got shape {a.shape}."
          ),
      )
      if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(
            f"Connectivity {what} must be integers, got dtype {a.dtype}."
        )
      a = a.astype(np.int64)
      if a.size and (a.min() < 0 or a.max() >= size):
        raise ValueError(
            f"Connectivity {what} must lie in [0, {size}), got values from "
            f"{a.min()} to {a.max()}."
        )
      arrays.append(a)
    r, c = arrays
    if r.shape != c.shape:
      raise ValueError(
          f"Connectivity rows and cols must have one entry per synapse, got "
          f"{r.shape[0]} rows and {c.shape[0]} cols."
      )
    order = np.lexsort((r, c))
    r, c = r[order], c[order]
    if r.size > 1:
      same = (r[1:] == r[:-1]) & (c[1:] == c[:-1])
      if same.any():
        k = int(np.argmax(same))
        raise ValueError(
            f"Connectivity lists synapse ({r[k]}, {c[k]}) more than once."
        )
    self.rows = _frozen(r.astype(np.int32))
    self.cols = _frozen(c.astype(np.int32))
    # Where each output's synapses start: W^T in compressed sparse rows.
    self.indptr = _frozen(
        np.searchsorted(c, np.arange(self.shape[1] + 1)).astype(np.int32)
    )
    # The synapses sorted by input row, for the event-driven sum.
    by_row = np.lexsort((c, r))
    self.by_row = _frozen(by_row.astype(np.int32))
    starts = np.searchsorted(r[by_row], np.arange(self.shape[0] + 1))
    self.row_starts = _frozen(starts.astype(np.int32))
    degrees = np.diff(starts)
    self.max_out_degree = int(degrees.max()) if degrees.size else 0
    digest = hashlib.sha1()
    digest.update(np.asarray(self.shape, np.int64).tobytes())
    digest.update(self.rows.tobytes())
    digest.update(self.cols.tobytes())
    self._digest = digest.hexdigest()

  @classmethod
  def from_mask(cls, mask: Any) -> "Connectivity":
    """The synapses where a concrete ``(I, O)`` mask is nonzero."""
    try:
      m = np.asarray(mask)
    except (TypeError, jax.errors.TracerArrayConversionError) as e:
      raise ValueError(
          "mask must be concrete (a NumPy array or a constant JAX array), "
          f"not a traced value: {type(mask).__name__}."
      ) from e
    if m.ndim != 2:
      raise ValueError(f"mask must have rank 2, got shape {m.shape}.")
    rows, cols = np.nonzero(m)
    return cls(rows, cols, m.shape)

  @classmethod
  def random(
      cls, shape: tuple[int, int], density: float, seed: int = 0
  ) -> "Connectivity":
    """Each synapse present with probability ``density`` (NumPy's
    generator seeded with ``seed``), drawn without forming the ``I x O``
    mask."""
    if not 0.0 < density <= 1.0:
      raise ValueError(f"density must be in (0, 1], got {density!r}.")
    rng = np.random.default_rng(seed)
    num_in, num_out = shape
    rows, cols = [], []
    # Row by row, so that memory stays O(nnz).
    for i in range(num_in):
      k = rng.binomial(num_out, density)
      if k:
        rows.append(np.full(k, i, np.int64))
        cols.append(rng.choice(num_out, k, replace=False))
    if not rows:
      return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), shape)
    return cls(np.concatenate(rows), np.concatenate(cols), shape)

  @property
  def nnz(self) -> int:
    return int(self.rows.size)

  @property
  def density(self) -> float:
    return self.nnz / (self.shape[0] * self.shape[1])

  def mask(self) -> np.ndarray:
    """The dense boolean ``(I, O)`` mask (for tests and small layers)."""
    m = np.zeros(self.shape, bool)
    m[self.rows, self.cols] = True
    return m

  def __hash__(self) -> int:
    return hash(self._digest)

  def __eq__(self, other: object) -> bool:
    return isinstance(other, Connectivity) and self._digest == other._digest

  def __repr__(self) -> str:
    return (
        f"Connectivity(shape={self.shape}, nnz={self.nnz}, "
        f"density={self.density:.3g})"
    )


def _frozen(a: np.ndarray) -> np.ndarray:
  a.setflags(write=False)
  return a


def _csr(
    data: Array, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]
) -> jsparse.BCSR:
  return jsparse.BCSR(
      (data, jnp.asarray(indices), jnp.asarray(indptr)),
      shape=shape,
      indices_sorted=True,
      unique_indices=True,
  )


def _product(w: Array, x2: Array, connectivity: Connectivity) -> Array:
  """``x2 @ W`` for ``x2`` of ``(N, I)``: ``W^T`` (rows = outputs) in
  compressed sparse rows, one loop over the synapses."""
  c = connectivity
  w_t = _csr(w, c.rows, c.indptr, (c.shape[1], c.shape[0]))
  return (w_t @ x2.T).T


def _product_transposed(
    w: Array, ct: Array, connectivity: Connectivity
) -> Array:
  """``ct @ W^T`` for ``ct`` of ``(N, O)``: ``W`` (rows = inputs) in
  compressed sparse rows, the synapses taken in input order."""
  c = connectivity
  w_by_row = _csr(
      jnp.take(w, jnp.asarray(c.by_row)),
      c.cols[c.by_row],
      c.row_starts,
      c.shape,
  )
  return (w_by_row @ ct.T).T


# Up to this many entries of I x O, the synapses' products are read off
# the dense product x^T ct (a matmul and one gather of scalars), 5-10x faster
# on XLA:CPU than gathering N-vectors per synapse.
_DENSE_PRODUCT_ENTRIES = 1 << 24


def _synapse_products(
    x2: Array, ct: Array, connectivity: Connectivity
) -> Array:
  """``sum_n x2[n, row_k] ct[n, col_k]`` per synapse ``k``."""
  c = connectivity
  if c.shape[0] * c.shape[1] <= _DENSE_PRODUCT_ENTRIES:
    return (x2.T @ ct)[jnp.asarray(c.rows), jnp.asarray(c.cols)]
  return jnp.einsum(
      "kn,kn->k",
      jnp.take(x2.T, jnp.asarray(c.rows), axis=0),
      jnp.take(ct.T, jnp.asarray(c.cols), axis=0),
  )


# ``y = x @ W`` on the synapses as a bilinear primitive of its own, so that
# its transposes are the products above: JAX's transposes of the sparse
# product (a scatter for ``x``) run 20-35x slower on XLA:CPU.
_product_p = jex_core.Primitive("etp_sparse_product")
_product_p.def_impl(
    lambda w, x2, *, connectivity: _product(w, x2, connectivity)
)
_product_p.def_abstract_eval(
    lambda w, x2, *, connectivity: jax.core.ShapedArray(
        (x2.shape[0], connectivity.shape[1]), jnp.result_type(w, x2)
    )
)
mlir.register_lowering(
    _product_p,
    mlir.lower_fun(
        lambda w, x2, *, connectivity: _product(w, x2, connectivity),
        multiple_results=False,
    ),
)


def _product_jvp(
    primals: Sequence[Array],
    tangents: Sequence[Any],
    *,
    connectivity: Connectivity,
) -> tuple[Array, Any]:
  w, x2 = primals
  w_dot, x_dot = tangents
  out = _product_p.bind(w, x2, connectivity=connectivity)
  parts = []
  if type(w_dot) is not ad.Zero:
    parts.append(_product_p.bind(w_dot, x2, connectivity=connectivity))
  if type(x_dot) is not ad.Zero:
    parts.append(_product_p.bind(w, x_dot, connectivity=connectivity))
  if not parts:
    return out, ad.Zero(jax.typeof(out).to_tangent_aval())
  return out, sum(parts[1:], parts[0])


def _product_transpose(
    ct: Any, w: Any, x2: Any, *, connectivity: Connectivity
) -> tuple[Optional[Array], Optional[Array]]:
  if type(ct) is ad.Zero:
    return None, None
  if ad.is_undefined_primal(w):
    return _synapse_products(x2, ct, connectivity).astype(w.aval.dtype), None
  return None, _product_transposed(w, ct, connectivity).astype(x2.aval.dtype)


def _product_batch(
    args: Sequence[Any],
    dims: Sequence[Optional[int]],
    *,
    connectivity: Connectivity,
) -> tuple[Array, int]:
  w, x2 = args
  dw, dx = dims
  if dw is None:
    assert dx is not None, "vmap batches at least one operand"
    x = jnp.moveaxis(x2, dx, 0)
    n, m = x.shape[0], x.shape[1]
    y = _product_p.bind(
        w, jnp.reshape(x, (n * m, x.shape[2])), connectivity=connectivity
    )
    return jnp.reshape(y, (n, m, y.shape[-1])), 0
  # A batch of weights: one product each.
  w = jnp.moveaxis(w, dw, 0)
  x = x2 if dx is None else jnp.moveaxis(x2, dx, 0)
  fn = lambda wi, xi: _product_p.bind(wi, xi, connectivity=connectivity)
  return jax.vmap(fn, in_axes=(0, None if dx is None else 0))(w, x), 0


ad.primitive_jvps[_product_p] = _product_jvp
ad.primitive_transposes[_product_p] = _product_transpose
batching.primitive_batchers[_product_p] = _product_batch


def _synapse_sum(x: Array, w: Array, connectivity: Connectivity) -> Array:
  """``y[..., o] = sum over synapses into o of x[..., row] w``."""
  c = connectivity
  if not c.nnz:
    return jnp.zeros(x.shape[:-1] + (c.shape[1],), jnp.result_type(x, w))
  lead = x.shape[:-1]
  y = _product_p.bind(w, jnp.reshape(x, (-1, c.shape[0])), connectivity=c)
  return jnp.reshape(y, lead + (c.shape[1],))


def active_inputs(x2: Array, max_events: int) -> tuple[Array, Array]:
  """``(idx, values)``: per sample (rows of ``x2``), the indices of the
  nonzero inputs, padded to ``max_events`` with ``I`` (one past the end),
  and their values (0 at the padding)."""
  num_in = x2.shape[-1]
  idx = jax.vmap(
      lambda a: jnp.nonzero(a, size=max_events, fill_value=num_in)[0]
  )(x2 != 0)
  values = jnp.take_along_axis(x2, jnp.minimum(idx, num_in - 1), axis=-1)
  return idx, jnp.where(idx < num_in, values, 0)


def _event_sum(
    x: Array, w: Array, connectivity: Connectivity, max_events: int
) -> Array:
  """The same sum from the nonzero inputs' synapses only (at most
  ``max_events`` nonzero per sample)."""
  c = connectivity
  lead = x.shape[:-1]
  x2 = jnp.reshape(x, (-1, c.shape[0]))
  idx, x_active = active_inputs(x2, max_events)
  starts = jnp.asarray(c.row_starts)
  begin = jnp.take(starts, idx, mode="clip")
  end = jnp.take(starts, idx + 1, mode="clip")
  end = jnp.where(idx < c.shape[0], end, begin)
  slots = jnp.arange(max(c.max_out_degree, 1))
  pos = begin[..., None] + slots  # (N, E, D) positions in by_row order
  live = pos < end[..., None]
  syn = jnp.take(jnp.asarray(c.by_row), jnp.where(live, pos, 0))
  vals = jnp.where(live, jnp.take(w, syn) * x_active[..., None], 0)
  out = jnp.take(jnp.asarray(c.cols), syn)
  n = x2.shape[0]
  y = jnp.zeros((n, c.shape[1]), w.dtype)
  y = y.at[jnp.arange(n)[:, None, None], out].add(vals)
  return jnp.reshape(y, lead + (c.shape[1],))


def _sparse_impl(
    x: Array,
    w: Array,
    *bias: Array,
    has_bias: bool,
    connectivity: Connectivity,
    max_events: Optional[int],
) -> Array:
  if max_events is None:
    y = _synapse_sum(x, w, connectivity)
  else:
    y = lax.cond(
        jnp.max(jnp.sum(x != 0, axis=-1)) <= max_events,
        lambda: _event_sum(x, w, connectivity, max_events),
        lambda: _synapse_sum(x, w, connectivity),
    )
  if has_bias:
    y = y + bias[0]
  return y


def _sparse_tangent_impl(
    x: Array, w: Array, *bias: Array, max_events: Optional[int], **params: Any
) -> Array:
  # The event-driven sum reads which inputs are nonzero, which has no
  # derivative; the tangent map is the plain sum's.
  del max_events
  return _sparse_impl(x, w, *bias, max_events=None, **params)


def _trainable_invars(params: primitive.Params) -> dict[str, int]:
  return {"weight": 1, "bias": 2} if params["has_bias"] else {"weight": 1}


def _at_synapses(v: Array, idx: np.ndarray) -> Array:
  return jnp.take(v, idx, axis=-1)


def _xy_to_trace(
    x: Array,
    hidden_dim: Array,
    weights: primitive.Weights,
    *,
    has_bias: bool,
    connectivity: Connectivity,
    **_: Any,
) -> primitive.Tree:
  del weights
  c = connectivity
  out = {"weight": _at_synapses(x, c.rows) * _at_synapses(hidden_dim, c.cols)}
  if has_bias:
    out["bias"] = hidden_dim
  return out


def _yw_to_w(
    hidden_dim: Array,
    trace: primitive.Trace,
    *,
    has_bias: bool,
    connectivity: Connectivity,
    **_: Any,
) -> primitive.Tree:
  out = {
      "weight": trace["weight"] * _at_synapses(hidden_dim, connectivity.cols)
  }
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
    connectivity: Connectivity,
    **_: Any,
) -> primitive.Tree:
  del weights
  c = connectivity
  x2 = jnp.reshape(x, (-1, c.shape[0]))
  hd2 = jnp.reshape(hidden_dim, (-1, c.shape[1]))
  prod = _at_synapses(x2, c.rows) * _at_synapses(hd2, c.cols)
  out = {"weight": jnp.sum(prod, axis=0)}
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
  del x_aval
  lead = tuple(y_aval.shape[:-1])
  nnz = weight_avals["weight"].shape[0]
  out = {"weight": jnp.zeros(lead + (nnz, num_hidden_state), y_aval.dtype)}
  if has_bias:
    out["bias"] = jnp.zeros(
        lead + (y_aval.shape[-1], num_hidden_state), y_aval.dtype
    )
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
    connectivity: Connectivity,
    **_: Any,
) -> primitive.Tree:
  del weights
  c = connectivity
  d_syn = jnp.take(d, c.cols, axis=-3)  # (..., nnz, S, S)
  df_syn = jnp.take(d_f, c.cols, axis=-2)  # (..., nnz, S)
  x_syn = _at_synapses(x, c.rows)[..., None]
  out = {
      "weight": primitive.mix_states(d_syn, trace["weight"]) + x_syn * df_syn
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
    connectivity: Connectivity,
    **_: Any,
) -> primitive.Tree:
  g_syn = jnp.take(g, connectivity.cols, axis=-2)
  out = {
      "weight": primitive.sum_to_rank(
          primitive.weighted_state_sum(trace["weight"], g_syn), 1
      )
  }
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
    connectivity: Connectivity,
    **_: Any,
) -> primitive.Tree:
  del weights
  c = connectivity
  phi_syn = jnp.take(phi, c.cols, axis=-3)  # (..., nnz, S', S)
  cs_syn = jnp.take(cs, c.cols, axis=-2)  # (k, ..., nnz, S')
  x_syn = _at_synapses(xs, c.rows).astype(cs.dtype)  # (k, ..., nnz)
  out = {
      "weight": primitive.mix_states(phi_syn, trace["weight"])
      + jnp.einsum("t...n,t...ns->...ns", x_syn, cs_syn)
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

etp_batched_sparse_p, etp_sparse_p = primitive.register_primitive_pair(
    "sparse",
    _sparse_impl,
    _RULES,
    trainable_invars_fn=_trainable_invars,
    x_invar_index=0,
    input_free_keys=("bias",),
    tangent_impl=_sparse_tangent_impl,
)


def check_max_events(max_events: Any, num_inputs: int) -> Optional[int]:
  """``max_events`` validated: ``None`` or an int in ``[1, num_inputs]``."""
  if max_events is None:
    return None
  if (
      isinstance(max_events, bool)
      or not isinstance(max_events, (int, np.integer))
      or not 1 <= max_events <= num_inputs
  ):
    raise ValueError(
        f"max_events must be None or an int in [1, {num_inputs}] (the "
        f"inputs), got {max_events!r}."
    )
  return int(max_events)


def sparse(
    x: Any,
    w: Any,
    connectivity: Connectivity,
    b: Optional[Any] = None,
    *,
    max_events: Optional[int] = None,
) -> Any:
  r"""ETP-routed sparse affine map :math:`y = x W + b`, ``W`` on synapses.

  Args:
    x: input of shape ``(I,)`` or ``(B, I)``; may be a ``saiunit.Quantity``.
    w: the weights of the synapses, ``(nnz,)``, in ``connectivity``'s order
      (sorted by output, then input).
    connectivity: a :class:`Connectivity` of shape ``(I, O)``.
    b: optional bias of shape ``(O,)`` in the unit of ``x * w``.
    max_events: ``None``, or sum only the synapses of the nonzero inputs
      (spikes) while at most ``max_events`` are nonzero in every sample
      (else the full sum); the same values either way.

  Returns:
    ``y`` of shape ``(O,)`` or ``(B, O)``.

  Raises:
    ValueError: for a connectivity that is not a :class:`Connectivity`, or
      inputs and weights whose shapes do not fit it.

  >>> import jax.numpy as jnp, numpy as np
  >>> c = Connectivity.from_mask(np.eye(3, dtype=bool))
  >>> sparse(jnp.ones((2, 3)), jnp.arange(3.0), c).tolist()
  [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]
  """
  if not isinstance(connectivity, Connectivity):
    raise ValueError(
        "connectivity of sparse must be a haiku_etp.Connectivity, got "
        f"{type(connectivity).__name__}."
    )
  x_m, x_unit = units.split(x)
  w_m, w_unit = units.split(w)
  num_in, num_out = connectivity.shape
  checks.assert_shape(
      w_m,
      (connectivity.nnz,),
      custom_message=(
          f"Weight of sparse must have shape ({connectivity.nnz},), one value "
          f"per synapse, got shape {w_m.shape}."
      ),
  )
  if x_m.ndim not in (1, 2) or x_m.shape[-1] != num_in:
    raise ValueError(
        f"Input to sparse must have shape ({num_in},) or (B, {num_in}), got "
        f"shape {x_m.shape}."
    )
  max_events = check_max_events(max_events, num_in)
  unit = units.product(x_unit, w_unit)
  args: list["jax.typing.ArrayLike"] = [x_m, w_m]
  if b is not None:
    b_m = units.bias_mantissa(b, unit, "sparse")
    checks.assert_shape(
        b_m,
        (num_out,),
        custom_message=(
            f"Bias of sparse must have shape ({num_out},), got shape "
            f"{jnp.shape(b_m)}."
        ),
    )
    args.append(b_m)
  prim = etp_batched_sparse_p if x_m.ndim == 2 else etp_sparse_p
  y = prim.bind(
      *args,
      has_bias=b is not None,
      connectivity=connectivity,
      max_events=max_events,
  )
  return units.with_unit(y, unit)
