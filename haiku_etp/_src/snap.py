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
r"""SnAp-n (Menick et al., 2020): RTRL's influence on a fixed sparsity pattern.

RTRL rolls ``M_t = J_t M_{t-1} + I_t`` (per sample ``H x P``). SnAp-n keeps
only the entries ``(h, theta_p)`` that ``n`` steps of the step's structure
reach from ``theta_p``,

.. math::
  P_1 = \operatorname{nz}(I), \qquad
  P_{k+1} = P_k \cup \operatorname{nz}(\operatorname{nz}(J)\, P_k),
  \qquad M_t = (J_t M_{t-1} + I_t) \odot P_n,

and stores only those. On a dense recurrent layer SnAp-1 keeps each
weight's influence on the unit it feeds (``J``'s diagonal included, which
D-RTRL's cut leaves out); ``P_2`` is already every unit, so SnAp-2 is RTRL.
Where ``P_n`` is closed (``P_{n+1} = P_n``) SnAp-n is RTRL, exactly. A
masked weight (``w * mask``) has no influence where the mask is zero and a
masked recurrent matrix a sparser ``J``: the pattern, and the storage,
shrink with it.

The pattern is the step's structural sparsity, read once per compiled step
from its Jacobians at random points (``H`` reverse-mode products of the
compiled step on random parameters, state and inputs, a union over samples
and two draws): an entry that is zero at every such point (a derivative
that vanishes on a region, e.g. a ReLU off at all of them) is left out.
Each step costs RTRL's record (``J`` and ``I`` per sample); the roll is
one product per stored pair of entries of the same parameter column.
"""

import dataclasses
from typing import Optional

import jax
from jax import tree_util
import jax.numpy as jnp
import numpy as np

from haiku_etp._src import jacobians
from haiku_etp._src import protocol
from haiku_etp._src import rtrl as rtrl_lib

_PREFIX = "snap:"
_PROBES = 2


class Pattern:
  """The SnAp pattern of one parameter: ``rows``/``cols`` of its stored
  entries (hidden index, parameter entry), or ``dense`` when every entry is
  kept; ``pairs`` are ``(entry, entry)`` of the same column."""

  def __init__(self, mask: np.ndarray):
    self.shape = mask.shape
    self.dense = bool(mask.all())
    self.rows, self.cols = np.nonzero(mask)
    order = np.lexsort((self.rows, self.cols))
    self.rows, self.cols = self.rows[order], self.cols[order]
    self.count = int(mask.sum())
    if not self.dense:
      starts = np.searchsorted(self.cols, np.arange(mask.shape[1] + 1))
      a, b = [], []
      for p in range(mask.shape[1]):
        e = np.arange(starts[p], starts[p + 1])
        a.append(np.repeat(e, len(e)))
        b.append(np.tile(e, len(e)))
      self.pair_out = np.concatenate(a).astype(np.int32)
      self.pair_in = np.concatenate(b).astype(np.int32)


def _probe_inputs(compiled, key):
  """Random ``(params, state, rng, x)`` in the compiled step's structure."""
  program = compiled.program
  leaves = []
  for i, var in enumerate(program.invars):
    aval = program.aval(var)
    key, sub = jax.random.split(key)
    if jnp.issubdtype(aval.dtype, jnp.floating):
      leaves.append(jax.random.normal(sub, aval.shape, aval.dtype))
    elif jnp.issubdtype(aval.dtype, jax.dtypes.prng_key):
      leaves.append(jax.random.key(i))
    elif aval.dtype == jnp.uint32 and aval.shape == (2,):
      leaves.append(jax.random.PRNGKey(i))
    else:
      leaves.append(jnp.zeros(aval.shape, aval.dtype))
  return tree_util.tree_unflatten(compiled.in_tree, leaves)


def structure(compiled, paths) -> tuple:
  """``(J, {path: I})``: boolean ``H x H`` and ``H x n`` nonzero patterns of
  the step's Jacobians, a union over samples and random draws."""
  with jax.ensure_compile_time_eval():
    j_pat, i_pat = None, None
    for draw in range(_PROBES):
      params, state, rng, x = _probe_inputs(compiled, jax.random.PRNGKey(draw))
      entries = jacobians.hidden_entries(state)
      leaves = dict(zip(compiled.param_paths, tree_util.tree_leaves(params)))
      shapes = [jnp.shape(state[m][n]) for m, n in entries]

      def f(h, sub, state=state, params=params, rng=rng, x=x):
        st = {m: dict(e) for m, e in state.items()}
        start = 0
        for (m, n), shape in zip(entries, shapes):
          size = int(np.prod(shape[1:]))
          st[m][n] = jnp.reshape(h[:, start : start + size], shape)
          start += size
        flat, tree = tree_util.tree_flatten(params)
        by_path = dict(zip(compiled.param_paths, flat))
        by_path.update(sub)
        p = tree_util.tree_unflatten(
            tree, [by_path[k] for k in compiled.param_paths]
        )
        _, new, _ = jacobians.run_step(compiled, p, st, rng, x, jacobians=False)
        return jacobians.flat_hidden(new, entries)

      h = jacobians.flat_hidden(state, entries)
      sub = {p: leaves[p] for p in paths}
      out, pull = jax.vjp(f, h, sub)
      num_h = out.shape[1]
      eye = jnp.eye(num_h, dtype=out.dtype)
      d_h, d_sub = jax.vmap(lambda e: pull(jnp.broadcast_to(e, out.shape)))(eye)
      jd = np.asarray(jnp.any(d_h != 0, axis=1))  # (H out, H in)
      idd = {
          p: np.asarray(jnp.reshape(d_sub[p], (num_h, -1)) != 0) for p in paths
      }
      j_pat = jd if j_pat is None else j_pat | jd
      i_pat = idd if i_pat is None else {p: i_pat[p] | idd[p] for p in paths}
  return j_pat, i_pat


def patterns(j_pat, i_pat, n: int) -> tuple:
  """``({path: P_n}, {path: closed})`` from the structural patterns."""
  j = j_pat.astype(np.int64)
  out, closed = {}, {}
  for path, mask in i_pat.items():
    m = mask.copy()
    for _ in range(n - 1):
      m = m | ((j @ m.astype(np.int64)) > 0)
    out[path] = m
    closed[path] = bool(np.array_equal(m | ((j @ m.astype(np.int64)) > 0), m))
  return out, closed


_CACHE: dict = {}


@dataclasses.dataclass(frozen=True)
class SnAp:
  """RTRL's influence restricted to the SnAp-n pattern.

  Attributes:
    n: how many steps of the step's structure the pattern follows (``>= 1``).
    max_trace_bytes: the largest total size of the stored entries
      (``None``: no limit).
  """

  n: int = 1
  max_trace_bytes: Optional[int] = rtrl_lib.DEFAULT_TRACE_BYTES
  name: str = "snap"
  form = "window"
  cross_budget = 0
  needs = protocol.StepNeeds(per_position=False, full_jacobian=True)

  def __post_init__(self):
    if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
      raise ValueError(f"snap: n must be an int >= 1, got {self.n!r}.")
    if self.max_trace_bytes is not None and (
        isinstance(self.max_trace_bytes, bool)
        or not isinstance(self.max_trace_bytes, int)
        or self.max_trace_bytes < 0
    ):
      raise ValueError(
          "snap: max_trace_bytes must be None or an int >= 0, got "
          f"{self.max_trace_bytes!r}."
      )

  def layout(self, compiled) -> tuple:
    """``({path: Pattern}, {path: closed})`` for the compiled step (cached
    per step and ``n``)."""
    key = (id(compiled), self.n)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is compiled:
      return hit[1]
    paths = rtrl_lib.temporal_paths(compiled)
    j_pat, i_pat = structure(compiled, paths)
    masks, closed = patterns(j_pat, i_pat, self.n)
    found = ({p: Pattern(m) for p, m in masks.items()}, closed)
    _CACHE[key] = (compiled, found)
    return found

  def init(self, compiled) -> dict:
    layout, _ = self.layout(compiled)
    hidden = rtrl_lib._hidden_avals(compiled)  # pylint: disable=protected-access
    batch = hidden[0].shape[0]
    avals = rtrl_lib._param_avals(compiled)  # pylint: disable=protected-access
    entries = {}
    for path, pat in layout.items():
      dtype = avals[path].dtype
      shape = (batch,) + pat.shape if pat.dense else (batch, pat.count)
      entries[_PREFIX + path] = jnp.zeros(shape, dtype)
    return entries

  def operands(self, compiled, params):
    leaves = dict(zip(compiled.param_paths, tree_util.tree_leaves(params)))
    return {p: leaves[p] for p in rtrl_lib.temporal_paths(compiled)}

  def roll(self, compiled, traces, record, operands) -> dict:
    del operands
    layout, _ = self.layout(compiled)
    j = record.full.hidden
    new = dict(traces)
    for path, pat in layout.items():
      m = traces[_PREFIX + path]
      i = record.full.params[path].astype(m.dtype)
      jm = j.astype(m.dtype)
      if pat.dense:
        new[_PREFIX + path] = jnp.einsum("bij,bjn->bin", jm, m) + i
        continue
      rows, cols = pat.rows, pat.cols
      prod = jm[:, rows[pat.pair_out], rows[pat.pair_in]] * m[:, pat.pair_in]
      rolled = jax.ops.segment_sum(
          prod.T, pat.pair_out, num_segments=pat.count
      ).T
      new[_PREFIX + path] = (rolled + i[:, rows, cols]).astype(m.dtype)
    return new

  def solve(self, compiled, traces, signals, operands):
    layout, _ = self.layout(compiled)
    g = jnp.concatenate(
        [jnp.reshape(s, (s.shape[0], -1)) for s in signals.leaves], axis=-1
    )
    grads = {}
    for path, leaf in operands.items():
      pat, m = layout[path], traces[_PREFIX + path]
      gm = g.astype(m.dtype)
      if pat.dense:
        dw = jnp.einsum("bh,bhn->n", gm, m)
      else:
        dw = jax.ops.segment_sum(
            jnp.sum(gm[:, pat.rows] * m, axis=0),
            pat.cols,
            num_segments=pat.shape[1],
        )
      grads[path] = jnp.reshape(dw, jnp.shape(leaf)).astype(leaf.dtype)
    return grads

  def verdicts(self, compiled) -> tuple:
    _, closed = self.layout(compiled)
    random = ("rtrl_random_step",) if rtrl_lib._uses_rng(compiled) else ()  # pylint: disable=protected-access
    out = []
    for p in compiled.parameters:
      if p.role == "non-temporal":
        out.append(protocol.ParameterVerdict(p.path, p.role, True))
        continue
      reasons = tuple(r for r in p.reasons if r == "untraced_memory") + random
      if not closed[p.path]:
        reasons += ("snap_truncated",)
      out.append(
          protocol.ParameterVerdict(p.path, "full", not reasons, reasons)
      )
    return tuple(out)

  def note(self, compiled) -> str:
    layout, closed = self.layout(compiled)
    if all(closed.values()):
      return ""
    kept = sum(p.count for p in layout.values())
    full = sum(int(np.prod(p.shape)) for p in layout.values())
    return (
        f"snap_truncated: SnAp-{self.n} keeps {kept} of the {full} influence "
        "entries per sample (those n steps of the step's structure reach); "
        "the rest are dropped at every step. A larger n keeps more. "
    )

  def check(self, compiled, traces) -> None:
    if self.max_trace_bytes is None:
      return
    nbytes = sum(
        int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
        for k, v in traces.items()
        if k.startswith(_PREFIX)
    )
    if nbytes > self.max_trace_bytes:
      raise ValueError(
          f"snap(n={self.n}) stores {nbytes} bytes of influence entries for "
          f"this step, over max_trace_bytes={self.max_trace_bytes}. Use a "
          "smaller batch or n, d_rtrl, or raise max_trace_bytes."
      )


def stored_entries(compiled, n: int) -> dict:
  """``{path: entries per sample}`` that SnAp-n stores for ``compiled``."""
  layout, _ = SnAp(n=n).layout(compiled)
  return {p: pat.count for p, pat in layout.items()}
