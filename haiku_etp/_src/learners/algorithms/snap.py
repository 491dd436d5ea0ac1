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
from typing import Any, Optional, Sequence
import zlib

import jax
from jax import tree_util
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.core import state_layout
from haiku_etp._src.compiler import compiler as compiler_lib
from haiku_etp._src.compiler import recording
from haiku_etp._src.learners.algorithms import influence
from haiku_etp._src.learners.algorithms import protocol

_PREFIX = state_layout.SNAP_PREFIX
_SCALES = (1.0, 3.0, 0.3)
_PROBES = len(_SCALES)


class Pattern:
  """The SnAp pattern of one parameter leaf (``H x n`` booleans).

  ``dense`` when every entry is kept (stored as RTRL's ``(B, H, n)``).
  Otherwise the entries, sorted by column then row, are stored flat, and
  the roll works on blocks: the columns with the same set of rows (the same
  support) share one ``k x k`` block of ``J``, and the supports of one size
  ``k`` are stacked into ``(G, k, m)`` blocks (``m`` the most columns of a
  support in the class; shorter ones are padded with an empty slot).
  """

  def __init__(self, mask: np.ndarray):
    self.shape = mask.shape
    self.dense = bool(mask.all())
    self.rows, self.cols = np.nonzero(mask)
    order = np.lexsort((self.rows, self.cols))
    self.rows, self.cols = self.rows[order], self.cols[order]
    self.count = int(mask.sum())
    if self.dense:
      return
    entry = {(r, c): e for e, (r, c) in enumerate(zip(self.rows, self.cols))}
    supports: dict = {}
    for c in range(mask.shape[1]):
      rows = tuple(np.nonzero(mask[:, c])[0])
      if rows:
        supports.setdefault(rows, []).append(c)
    by_size: dict = {}
    for rows, cols in supports.items():
      by_size.setdefault(len(rows), []).append((rows, cols))
    # Per class: rows (G, k), columns (G, m) padded with n, entries
    # (G, k, m) padded with count (the empty slot).
    self.classes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    position = np.zeros(self.count, np.int64)
    offset = 0
    for k in sorted(by_size):
      groups = by_size[k]
      width = max(len(cols) for _, cols in groups)
      class_rows = np.array([r for r, _ in groups], np.int32)
      class_cols = np.full((len(groups), width), mask.shape[1], np.int32)
      entries = np.full((len(groups), k, width), self.count, np.int32)
      for g, (rs, cs) in enumerate(groups):
        class_cols[g, : len(cs)] = cs
        for a, r in enumerate(rs):
          for b, c in enumerate(cs):
            e = entry[(r, c)]
            entries[g, a, b] = e
            position[e] = offset + (g * k + a) * width + b
      self.classes.append((class_rows, class_cols, entries))
      offset += len(groups) * k * width
    self.position = position.astype(np.int32)

  def flat_indices(self, num_h: int) -> list:
    """Per class: flat indices into each sample's ``J`` (``(G, k, k)``) and
    ``I`` (``(G, k, m)``, padding at 0) and the mask of real columns."""
    n = self.shape[1]
    out = []
    for rows, cols, _ in self.classes:
      j_idx = (rows[:, :, None] * num_h + rows[:, None, :]).astype(np.int32)
      real = cols < n
      i_idx = rows[:, :, None] * n + np.where(real, cols, 0)[:, None, :]
      keep = np.broadcast_to(real[:, None, :], i_idx.shape)
      out.append((j_idx.reshape(-1), i_idx.astype(np.int32), keep))
    return out


def _probe_inputs(compiled: compiler_lib.CompiledStep, key: Any):
  """Random ``(params, state, rng, x)`` in the compiled step's structure.

  Each leaf's draw depends on its path in that structure, not its position,
  so the steps compiled for ``init`` (with an rng) and for a gradient
  (without) get the same parameters, state and inputs, and the same
  pattern. Draw ``k`` scales the normals by ``_SCALES[k]`` (a spread of
  magnitudes, so that few derivatives sit on a region where they vanish at
  every probe).
  """
  program = compiled.program
  avals = tree_util.tree_unflatten(
      compiled.in_tree, [program.aval(v) for v in program.invars]
  )
  scale = _SCALES[key]
  base = jax.random.PRNGKey(key)

  def draw(path: tuple, aval):
    sub = jax.random.fold_in(
        base, zlib.crc32(tree_util.keystr(path).encode()) & 0x7FFFFFFF
    )
    if jnp.issubdtype(aval.dtype, jnp.floating):
      return scale * jax.random.normal(sub, aval.shape, aval.dtype)
    if jnp.issubdtype(aval.dtype, jax.dtypes.prng_key):
      return jax.random.key(0)
    if aval.dtype == jnp.uint32 and aval.shape == (2,):
      return jax.random.PRNGKey(0)
    return jnp.zeros(aval.shape, aval.dtype)

  return tree_util.tree_map_with_path(draw, avals)


def structure(
    compiled: compiler_lib.CompiledStep, paths: Sequence[str]
) -> tuple:
  """``(J, {path: I})``: boolean ``H x H`` and ``H x n`` nonzero patterns of
  the step's Jacobians, a union over samples and random draws."""
  with jax.ensure_compile_time_eval():
    j_pat, i_pat = None, None
    for draw in range(_PROBES):
      params, state, rng, x = _probe_inputs(compiled, draw)
      entries = recording.hidden_entries(state)
      leaves = dict(zip(compiled.param_paths, tree_util.tree_leaves(params)))

      def f(
          h,
          sub,
          state: Any = state,
          params: Any = params,
          rng: Optional[jax.Array] = rng,
          x: Any = x,
      ):
        st = recording.with_flat_hidden(state, entries, h)
        flat, tree = tree_util.tree_flatten(params)
        by_path = dict(zip(compiled.param_paths, flat))
        by_path.update(sub)
        p = tree_util.tree_unflatten(
            tree, [by_path[k] for k in compiled.param_paths]
        )
        _, new, _ = recording.run_step(compiled, p, st, rng, x, jacobians=False)
        return recording.flat_hidden(new, entries)

      h = recording.flat_hidden(state, entries)
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


_DENSE = ("etp_batched_dense",)


# The operand form keeps a weight's masked-out entries (as zeros); a mask
# that zeroes more than this share of a weight takes the parameter form,
# which stores only the live entries.
_MAX_DEAD = 0.1


def fast_applies(compiled: compiler_lib.CompiledStep, paths: Sequence[str]):
  """``{relation: live (I, O) mask}`` where SnAp can work on the relations'
  operands, else ``None``: every parameter in ``paths`` reaches the step
  only through dense ETP ops on batched inputs, and no weight has more than
  a tenth of its entries independent of the parameters (a constant mask)."""
  if not recording.projects_by_relations(compiled, paths):
    return None
  if any(rel.primitive.name not in _DENSE for rel in compiled.relations):
    return None
  with jax.ensure_compile_time_eval():
    params, _, _, _ = _probe_inputs(compiled, 0)
    tangents = jax.tree_util.tree_map(
        lambda v: jax.random.normal(jax.random.PRNGKey(8), v.shape, v.dtype)
        if jnp.issubdtype(v.dtype, jnp.floating)
        else jnp.zeros_like(v),
        params,
    )
    _, dw = jax.jvp(
        lambda p: recording.relation_weights(compiled, p),
        (params,),
        (tangents,),
    )
    live = {r: np.asarray(d["weight"] != 0) for r, d in enumerate(dw)}
  if any(1.0 - m.mean() > _MAX_DEAD for m in live.values()):
    return None
  return live


class FastLayout:
  """SnAp's pattern on the relations' operands (dense ops).

  For relation ``r`` and output unit ``o`` every input row ``i`` of the
  weight (and the bias) reaches the same hidden values, the support
  ``S_{r,o}``; units with equal support sizes ``k`` form a class whose
  entries are stored ``(B, G, k, I)`` (and ``(B, G, k)`` for the bias):
  ``units`` ``(G,)`` and ``rows`` ``(G, k)``.
  """

  def __init__(
      self, compiled: compiler_lib.CompiledStep, supports, closed, live
  ):
    self.closed = closed  # per relation
    self.live = live  # per relation, (I, O): the weight's unmasked entries
    self.classes = {}
    for r, support in supports.items():
      by_size: dict = {}
      for o in range(support.shape[1]):
        rows = np.nonzero(support[:, o])[0]
        if len(rows):
          by_size.setdefault(len(rows), []).append((o, rows))
      self.classes[r] = [
          (
              np.array([o for o, _ in units], np.int32),
              np.array([rw for _, rw in units], np.int32),
          )
          for _, units in sorted(by_size.items())
      ]
    self.num_inputs = {
        r: int(compiled.relations[r].x_shape[-1]) for r in supports
    }
    self.has_bias = {
        r: "bias" in compiled.relations[r].weights for r in supports
    }

  def labels(
      self, compiled: compiler_lib.CompiledStep, r: int, c: int
  ) -> tuple:
    key = compiled.relations[r].key
    k = self.classes[r][c][1].shape[1]
    return f"{_PREFIX}{key}/{k}", f"{_PREFIX}{key}/{k}:bias"


def fast_structure(
    compiled: compiler_lib.CompiledStep, n: int, live: dict
) -> FastLayout:
  """The operand-space pattern: ``J``'s and each relation's ``deltas``'
  nonzeros at two random points, grown by ``n - 1`` steps of ``J``."""
  with jax.ensure_compile_time_eval():
    j_pat, d_pat = None, None
    for draw in range(_PROBES):
      params, state, rng, x = _probe_inputs(compiled, draw)
      j, deltas, _ = recording.relation_jacobian(
          compiled, params, state, rng, x
      )
      jd = np.asarray(jnp.any(j != 0, axis=0))
      dd = {r: np.asarray(jnp.any(v != 0, axis=0)) for r, v in deltas.items()}
      j_pat = jd if j_pat is None else j_pat | jd
      d_pat = dd if d_pat is None else {r: d_pat[r] | dd[r] for r in dd}
  assert j_pat is not None and d_pat is not None  # at least one draw
  step = j_pat.astype(np.int64)
  supports, closed = {}, {}
  for r, m in d_pat.items():
    if not m.any():
      continue
    for _ in range(n - 1):
      m = m | ((step @ m.astype(np.int64)) > 0)
    supports[r] = m
    closed[r] = bool(np.array_equal(m | ((step @ m.astype(np.int64)) > 0), m))
  return FastLayout(compiled, supports, closed, live)


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


# Patterns of recently compiled steps (a step compiles once per shape).
_CACHE: dict = {}
_CACHE_SIZE = 32


@dataclasses.dataclass(frozen=True)
class SnAp(protocol.AlgorithmBase):
  """RTRL's influence restricted to the SnAp-n pattern.

  Two forms, chosen per compiled step. Where every parameter that reaches
  hidden state does so only through dense ETP ops (``fast_applies``), the
  influence is kept on the ops' operands and a step records ``J`` and each
  op's output derivatives from ``H`` batched reverse products (``I``'s
  entries are ``x_i delta_o``, never formed whole). Elsewhere it is kept on
  the parameters, from RTRL's per-sample Jacobians.

  Attributes:
    n: how many steps of the step's structure the pattern follows (``>= 1``).
    max_trace_bytes: the largest total size of the stored entries
      (``None``: no limit).
  """

  n: int = 1
  max_trace_bytes: Optional[int] = influence.DEFAULT_TRACE_BYTES
  name: str = "snap"
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

  def _plan(self, compiled: compiler_lib.CompiledStep) -> tuple:
    """``("fast", FastLayout)`` or ``("general", (patterns, closed))``,
    cached per step and ``n``."""
    key = (id(compiled), self.n)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is compiled:
      return hit[1]
    paths = influence.temporal_paths(compiled)
    live = fast_applies(compiled, paths)
    found: tuple[str, Any]
    if live is not None:
      found = ("fast", fast_structure(compiled, self.n, live))
    else:
      j_pat, i_pat = structure(compiled, paths)
      masks, closed = patterns(j_pat, i_pat, self.n)
      found = ("general", ({p: Pattern(m) for p, m in masks.items()}, closed))
    _CACHE[key] = (compiled, found)
    while len(_CACHE) > _CACHE_SIZE:
      _CACHE.pop(next(iter(_CACHE)))
    return found

  def layout(self, compiled: compiler_lib.CompiledStep) -> Optional[tuple]:
    """``({path: Pattern}, {path: closed})`` of the parameter form (``None``
    where the step takes the operand form)."""
    kind, plan = self._plan(compiled)
    return plan if kind == "general" else None

  def needs_for(
      self, compiled: compiler_lib.CompiledStep
  ) -> protocol.StepNeeds:
    if self._plan(compiled)[0] == "fast":
      return protocol.StepNeeds(per_position=False, replay=True)
    return self.needs

  def _batch(self, compiled: compiler_lib.CompiledStep) -> int:
    return influence.hidden_avals(compiled)[0].shape[0]

  def init(self, compiled: compiler_lib.CompiledStep) -> dict:
    kind, plan = self._plan(compiled)
    batch = self._batch(compiled)
    entries = {}
    if kind == "fast":
      dtype = influence.hidden_avals(compiled)[0].dtype
      for r, classes in plan.classes.items():
        for c, (units, rows) in enumerate(classes):
          w, b = plan.labels(compiled, r, c)
          shape = (batch,) + rows.shape
          entries[w] = jnp.zeros(shape + (plan.num_inputs[r],), dtype)
          if plan.has_bias[r]:
            entries[b] = jnp.zeros(shape, dtype)
      return entries
    layout, _ = plan
    avals = influence.param_avals(compiled)
    for path, pat in layout.items():
      dtype = avals[path].dtype
      shape = (batch,) + pat.shape if pat.dense else (batch, pat.count)
      entries[_PREFIX + path] = jnp.zeros(shape, dtype)
    return entries

  def operands(self, compiled: compiler_lib.CompiledStep, params: Any):
    if self._plan(compiled)[0] == "fast":
      return params, recording.relation_weights(compiled, params)
    leaves = dict(zip(compiled.param_paths, tree_util.tree_leaves(params)))
    return {p: leaves[p] for p in influence.temporal_paths(compiled)}

  def roll(
      self,
      compiled: compiler_lib.CompiledStep,
      traces: protocol.Traces,
      record: recording.StepRecord,
      operands: Any,
  ) -> dict:
    kind, plan = self._plan(compiled)
    if kind == "fast":
      return self._fast_roll(compiled, plan, traces, record, operands)
    layout, _ = plan
    j = record.full.hidden
    new = dict(traces)
    for path, pat in layout.items():
      m = traces[_PREFIX + path]
      i = record.full.params[path].astype(m.dtype)
      jm = j.astype(m.dtype)
      if pat.dense:
        new[_PREFIX + path] = jnp.einsum("bij,bjn->bin", jm, m) + i
        continue
      batch, num_h = m.shape[0], jm.shape[1]
      m_ext = jnp.concatenate([m, jnp.zeros((batch, 1), m.dtype)], axis=1)
      j_flat = jnp.reshape(jm, (batch, -1))
      i_flat = jnp.reshape(i, (batch, -1))
      blocks = []
      for (rows, _, entries), (j_idx, i_idx, keep) in zip(
          pat.classes, pat.flat_indices(num_h)
      ):
        # Gathers of the block entries alone (flat indices), never a copy
        # of J or I.
        j_g = jnp.take(j_flat, j_idx, axis=1)
        j_g = jnp.reshape(j_g, (batch,) + rows.shape + rows.shape[1:])
        i_g = jnp.take(i_flat, i_idx.reshape(-1), axis=1)
        i_g = jnp.reshape(i_g, (batch,) + entries.shape) * keep.astype(m.dtype)
        m_g = jnp.take(m_ext, entries.reshape(-1), axis=1)
        m_g = jnp.reshape(m_g, (batch,) + entries.shape)
        new_g = jnp.einsum("bgij,bgjm->bgim", j_g, m_g) + i_g
        blocks.append(jnp.reshape(new_g, (batch, -1)))
      padded = jnp.concatenate(blocks, axis=1)
      new[_PREFIX + path] = padded[:, pat.position].astype(m.dtype)
    return new

  def _fast_roll(
      self,
      compiled: compiler_lib.CompiledStep,
      plan: Any,
      traces: protocol.Traces,
      record: recording.StepRecord,
      operands: Any,
  ) -> dict:
    params, _ = operands
    state, rng, x = record.replay
    j, deltas, xs = recording.relation_jacobian(compiled, params, state, rng, x)
    batch, num_h = j.shape[:2]
    j_flat = jnp.reshape(j, (batch, -1))
    new = dict(traces)
    for r, classes in plan.classes.items():
      num_out = deltas[r].shape[-1]
      d_flat = jnp.reshape(deltas[r], (batch, -1))
      x_r = xs[r]
      for c, (units, rows) in enumerate(classes):
        w_label, b_label = plan.labels(compiled, r, c)
        g, k = rows.shape
        m = traces[w_label]
        # Units of one support share its block of J (one gather, not G).
        shared = bool((rows == rows[:1]).all())
        block = rows[:1] if shared else rows
        j_idx = (block[:, :, None] * num_h + block[:, None, :]).reshape(-1)
        j_g = jnp.take(j_flat, j_idx, axis=1).astype(m.dtype)
        j_g = jnp.reshape(j_g, (batch, block.shape[0], k, k))
        d_idx = (rows * num_out + units[:, None]).reshape(-1)
        d_g = jnp.reshape(jnp.take(d_flat, d_idx, axis=1), (batch, g, k))
        d_g = d_g.astype(m.dtype)
        x_g = x_r.astype(m.dtype)[:, None, :] * plan.live[r][:, units].T
        if shared:
          rolled = jnp.einsum("bij,bgjn->bgin", j_g[:, 0], m)
        else:
          rolled = jnp.einsum("bgij,bgjn->bgin", j_g, m)
        new[w_label] = rolled + d_g[..., None] * x_g[:, :, None, :]
        if plan.has_bias[r]:
          mb = traces[b_label]
          if shared:
            rolled_b = jnp.einsum("bij,bgj->bgi", j_g[:, 0], mb)
          else:
            rolled_b = jnp.einsum("bgij,bgj->bgi", j_g, mb)
          new[b_label] = rolled_b + d_g
    return new

  def solve(
      self,
      compiled: compiler_lib.CompiledStep,
      traces: protocol.Traces,
      signals: protocol.Signals,
      operands: Any,
  ):
    kind, plan = self._plan(compiled)
    g = jnp.concatenate(
        [jnp.reshape(s, (s.shape[0], -1)) for s in signals.leaves], axis=-1
    )
    if kind == "fast":
      params, weights = operands
      out = []
      for r, ops in enumerate(weights):
        grads = {k: jnp.zeros_like(v) for k, v in ops.items()}
        for c, (units, rows) in enumerate(plan.classes.get(r, ())):
          w_label, b_label = plan.labels(compiled, r, c)
          m = traces[w_label]
          g_k = jnp.reshape(
              jnp.take(g.astype(m.dtype), rows.reshape(-1), axis=1),
              (g.shape[0],) + rows.shape,
          )
          dw = jnp.einsum("bgk,bgki->ig", g_k, m)
          grads["weight"] = (
              grads["weight"].at[:, units].add(dw.astype(grads["weight"].dtype))
          )
          if plan.has_bias[r]:
            db = jnp.einsum("bgk,bgk->g", g_k, traces[b_label])
            grads["bias"] = (
                grads["bias"].at[units].add(db.astype(grads["bias"].dtype))
            )
        out.append(grads)
      return jax.tree_util.tree_map(jnp.zeros_like, params), out
    layout, _ = plan
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

  def _closed(self, compiled: compiler_lib.CompiledStep) -> dict:
    """``{parameter path: closed}``."""
    kind, plan = self._plan(compiled)
    if kind == "general":
      return plan[1]
    closed = {p: True for p in influence.temporal_paths(compiled)}
    for r, ok in plan.closed.items():
      for paths in compiled.relations[r].weights.values():
        for p in paths:
          if p in closed:
            closed[p] = closed[p] and ok
    return closed

  def verdicts(self, compiled: compiler_lib.CompiledStep) -> tuple:
    closed = self._closed(compiled)
    random: tuple[str, ...] = (
        ("rtrl_random_step",) if influence.uses_rng(compiled) else ()
    )
    if self._plan(compiled)[0] == "fast":
      random = ()  # The batched record uses the step's own draws.
    if influence.mixes_samples(compiled):
      random += ("rtrl_mixed_samples",)
    out = []
    for p in compiled.parameters:
      if p.role == compiler_lib.ParameterRole.NON_TEMPORAL:
        out.append(protocol.verdict(p))
        continue
      reasons = tuple(r for r in p.reasons if r == "untraced_memory") + random
      if not closed[p.path]:
        reasons += ("snap_truncated",)
      out.append(protocol.verdict(p, reasons, compiler_lib.ParameterRole.FULL))
    return tuple(out)

  def stored(self, compiled: compiler_lib.CompiledStep) -> tuple:
    """``(kept, full)``: influence entries per sample that SnAp stores and
    that RTRL would."""
    kind, plan = self._plan(compiled)
    num_h = sum(
        influence.size(a) // self._batch(compiled)
        for a in influence.hidden_avals(compiled)
    )
    if kind == "general":
      layout = plan[0]
      return (
          sum(p.count for p in layout.values()),
          sum(int(np.prod(p.shape)) for p in layout.values()),
      )
    kept = sum(
        rows.shape[1]
        * (int(plan.live[r][:, units].sum()) + plan.has_bias[r] * len(units))
        for r, classes in plan.classes.items()
        for units, rows in classes
    )
    avals = influence.param_avals(compiled)
    full = num_h * sum(
        influence.size(avals[p]) for p in influence.temporal_paths(compiled)
    )
    return kept, full

  def note(self, compiled: compiler_lib.CompiledStep) -> str:
    if all(self._closed(compiled).values()):
      return ""
    kept, full = self.stored(compiled)
    return (
        f"snap_truncated: SnAp-{self.n} keeps {kept} of the {full} influence "
        "entries per sample (those n steps of the step's structure reach); "
        "the rest are dropped at every step. A larger n keeps more. "
    )

  def check(
      self, compiled: compiler_lib.CompiledStep, traces: protocol.Traces
  ) -> None:
    def entries() -> str:
      batch = self._batch(compiled)
      kept, full = self.stored(compiled)
      return f"B x {kept} = {batch} x {kept} (of RTRL's B x {full})"

    influence.check_trace_budget(
        traces,
        _PREFIX,
        self.max_trace_bytes,
        learner=f"snap(n={self.n})",
        entries=entries,
        remedies="a smaller batch or n, d_rtrl",
    )


def stored_entries(compiled: compiler_lib.CompiledStep, n: int) -> int:
  """Influence entries per sample that SnAp-n stores for ``compiled``."""
  return SnAp(n=n).stored(compiled)[0]
