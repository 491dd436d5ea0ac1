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
r"""Real-time recurrent learning: the exact online gradient of any step.

With ``h`` every hidden value of a sample (all groups and positions,
flattened in the state's leaf order, ``H`` of them) and ``theta`` the
trained parameters, the influence ``M_t = dh_t / dtheta`` (per sample
``H x n`` for a parameter of ``n`` entries) obeys

.. math::
  M_t = J_t M_{t-1} + I_t, \quad J_t = \partial h_t / \partial h_{t-1},
  \quad I_t = \partial h_t / \partial \theta

and in the window form the trace term of a window entered at ``h^e`` is
``(dL/dh^e) M^e``. ``J_t`` is the whole Jacobian (recurrent weights, gates,
stacks, every group), so RTRL equals BPTT on every model whose samples are
independent; parameters used outside ETP ops included. ``J_t`` and ``I_t``
come per sample from ``H`` reverse-mode products
(:func:`~haiku_etp._src.compiler.recording.full_jacobian`), and ``J_t M`` is one
batched matrix product per parameter: ``O(B H^2 P)`` flops and ``B H P``
trace entries per step.

``params=`` keeps the full influence for some parameters only (a small
recurrent weight) and D-RTRL's traces for the rest.
"""

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.core import state_layout
from haiku_etp._src.compiler import compiler as compiler_lib
from haiku_etp._src.compiler import recording
from haiku_etp._src.core import primitive
from haiku_etp._src.learners.algorithms import influence
from haiku_etp._src.learners.algorithms import protocol
from haiku_etp._src.learners.algorithms import d_rtrl as d_rtrl_lib

_PREFIX = state_layout.INFLUENCE_PREFIX


def _relation_dw(
    rel: compiler_lib.Relation, xs: Any, coefficients: Any, weights: Any
) -> dict:
  """``{operand: (B, H, *w)}``: per sample and hidden value, the op's weight
  VJP summed over the steps, ``xs`` ``(k, B, ...)`` and ``coefficients``
  ``(k, B, H, *y[1:])`` in place of its output cotangent."""
  prim = rel.primitive
  if prim.name == "etp_batched_dense" and xs.ndim == 3:
    # One batched matmul whose output is the influence's own layout.
    k, batch, num_in = xs.shape
    num_h = coefficients.shape[2]
    x = jnp.broadcast_to(
        jnp.moveaxis(xs, 0, 1)[:, None], (batch, num_h, k, num_in)
    )
    c = jnp.transpose(coefficients, (1, 2, 0, 3))
    out = {"weight": jnp.einsum("bhti,bhto->bhio", x.astype(c.dtype), c)}
    if rel.params["has_bias"]:
      out["bias"] = jnp.sum(coefficients, axis=0)
    return out
  one = lambda c: primitive.summed_dw_per_sample(
      prim, xs, c, weights, rel.params
  )
  return jax.vmap(one, in_axes=2, out_axes=1)(coefficients)


@dataclasses.dataclass(frozen=True)
class RTRL(protocol.AlgorithmBase):
  """The full influence of each traced parameter on every hidden value.

  Attributes:
    max_trace_bytes: the largest total size of the influence traces
      (``None``: no limit).
    params: paths of the parameters to keep the full influence of
      (``None``: every parameter that reaches hidden state); the others get
      D-RTRL's traces.
    max_cross_bytes: D-RTRL's cross-group budget for the other parameters.
  """

  max_trace_bytes: Optional[int] = influence.DEFAULT_TRACE_BYTES
  params: Optional[tuple[str, ...]] = None
  max_cross_bytes: Optional[int] = compiler_lib.DEFAULT_CROSS_BYTES
  name: str = "rtrl"
  window_roll: str = "closed"

  @property
  def partial(self) -> bool:
    return self.params is not None

  @property
  def needs(self) -> protocol.StepNeeds:
    return protocol.StepNeeds(
        per_position=self.partial,
        full_jacobian=True,
        full_jacobian_params=self.params,
    )

  def relation_form(self, compiled: compiler_lib.CompiledStep) -> bool:
    """Whether the immediate Jacobian is recorded per relation (``d h /
    d y_r`` and the inputs): every full parameter reaches the step only
    through ETP ops with the batch first in their output."""
    if not recording.projects_by_relations(compiled, self.full_paths(compiled)):
      return False
    return all(
        rel.primitive.batch_axes(rel.params)[1] == 0
        for rel in compiled.relations
        if rel.key in self._skipped(compiled)
    )

  def needs_for(
      self, compiled: compiler_lib.CompiledStep
  ) -> protocol.StepNeeds:
    return dataclasses.replace(
        self.needs, relation_form=self.relation_form(compiled)
    )

  @property
  def cross_budget(self) -> Optional[int]:
    return self.max_cross_bytes if self.partial else 0

  def full_paths(self, compiled: compiler_lib.CompiledStep) -> tuple[str, ...]:
    """The parameters whose full influence is kept, in leaf order."""
    if self.params is None:
      return influence.temporal_paths(compiled)
    unknown = sorted(set(self.params) - set(compiled.param_paths))
    if unknown:
      raise ValueError(
          f"rtrl(params=...): {unknown} are not parameters of this step; "
          f"its parameters are {list(compiled.param_paths)}."
      )
    return tuple(p for p in compiled.param_paths if p in set(self.params))

  def _skipped(self, compiled: compiler_lib.CompiledStep) -> frozenset:
    """Relations left to the full influence: any that a full parameter
    feeds (D-RTRL's term would count it twice)."""
    full = set(self.full_paths(compiled))
    return frozenset(
        rel.key
        for rel in compiled.relations
        if any(full & set(paths) for paths in rel.weights.values())
    )

  def _drtrl(self, compiled: compiler_lib.CompiledStep) -> d_rtrl_lib.DRTRL:
    return d_rtrl_lib.DRTRL(
        max_cross_bytes=self.max_cross_bytes, skip=self._skipped(compiled)
    )

  def init(self, compiled: compiler_lib.CompiledStep) -> dict:
    hidden = influence.hidden_avals(compiled)
    batch = hidden[0].shape[0]
    num_h = sum(influence.size(a) // batch for a in hidden)
    avals = influence.param_avals(compiled)
    entries = {
        _PREFIX
        + path: jnp.zeros(
            (batch, num_h, influence.size(avals[path])), avals[path].dtype
        )
        for path in self.full_paths(compiled)
    }
    if self.partial:
      entries.update(self._drtrl(compiled).init(compiled))
    return entries

  def operands(self, compiled: compiler_lib.CompiledStep, params: Any) -> tuple:
    """``(full parameters, D-RTRL's operands or None, params)``: the last,
    gradient-stopped, only pulls the relation form back to the parameters
    (its solve is zero)."""
    leaves = dict(zip(compiled.param_paths, jax.tree_util.tree_leaves(params)))
    full = {p: leaves[p] for p in self.full_paths(compiled)}
    rest = (
        self._drtrl(compiled).operands(compiled, params)
        if self.partial
        else None
    )
    return full, rest, jax.lax.stop_gradient(params)

  def _influence(
      self,
      compiled: compiler_lib.CompiledStep,
      params: Any,
      coefficients: Any,
      xs: Any,
  ) -> dict:
    """``{path: (B, H, n)}``: summed over the steps (the leading axis of
    ``coefficients[r]`` ``(k, B, H, *y[1:])`` and ``xs[r]``), the relation
    form of ``d h / d theta`` with ``coefficients[r]`` in place of ``d h /
    d y_r``: per sample and hidden value, each relation's weight VJP over
    the steps, put together into the parameters."""
    weights = recording.relation_weights(compiled, params)
    some = next(iter(coefficients.values()))
    batch, num_h = some.shape[1], some.shape[2]
    per_relation = []
    for r, rel in enumerate(compiled.relations):
      if r in coefficients:
        per_relation.append(
            _relation_dw(rel, xs[r], coefficients[r], weights[r])
        )
      else:
        per_relation.append(
            {
                k: jnp.zeros((batch, num_h) + w.shape, w.dtype)
                for k, w in weights[r].items()
            }
        )
    paths = self.full_paths(compiled)
    tiles = recording.leaf_tiles(compiled, paths)
    if tiles is not None:
      # Whole operands or slices that tile a parameter: joined, never
      # padded and summed.
      out = {}
      for path, (axis, pieces) in tiles.items():
        blocks = [per_relation[r][k] for r, k in pieces]
        joined = (
            blocks[0]
            if len(blocks) == 1
            else jnp.concatenate(blocks, axis=2 + axis)
        )
        out[path] = jnp.reshape(joined, (batch, num_h, -1))
      return out
    _, pull = jax.vjp(lambda p: recording.relation_weights(compiled, p), params)
    grads = jax.vmap(jax.vmap(lambda cot: pull(cot)[0]))(per_relation)
    leaves = dict(zip(compiled.param_paths, jax.tree_util.tree_leaves(grads)))
    return {p: jnp.reshape(leaves[p], (batch, num_h, -1)) for p in paths}

  def roll(
      self,
      compiled: compiler_lib.CompiledStep,
      entries: protocol.Traces,
      record: recording.StepRecord,
      operands: Any,
  ) -> dict:
    new = dict(entries)
    if self.partial:
      new.update(
          self._drtrl(compiled).roll(compiled, entries, record, operands[1])
      )
    j = record.full.hidden
    if record.full.relations is not None:
      one_step = lambda v: None if v is None else v[None]
      immediate = self._influence(
          compiled,
          operands[2],
          {
              r: d[None]
              for r, d in record.full.relations.items()
              if compiled.relations[r].key in self._skipped(compiled)
          },
          [one_step(x) for x in record.x],
      )
    else:
      immediate = record.full.params
    for path in self.full_paths(compiled):
      m = entries[_PREFIX + path]
      rolled = jnp.einsum("bij,bjn->bin", j.astype(m.dtype), m)
      new[_PREFIX + path] = (rolled + immediate[path].astype(m.dtype)).astype(
          m.dtype
      )
    return new

  def window_forms(self, compiled: compiler_lib.CompiledStep) -> list:
    """How a window of ``k > 1`` steps rolls the influence (and, with
    ``params=``, D-RTRL's traces)."""
    out = []
    if self.window_roll == "per_step":
      why = "window_roll='per_step'"
    elif not self.relation_form(compiled):
      why = (
          "a full parameter reaches the step outside ETP ops, so its "
          "immediate Jacobian has no rank-one form per relation"
      )
    else:
      why = ""
    for path in self.full_paths(compiled):
      out.append((_PREFIX + path, "per_step" if why else "closed", why))
    if self.partial:
      out.extend(self._drtrl(compiled).window_forms(compiled))
    return out

  def roll_window(
      self,
      compiled: compiler_lib.CompiledStep,
      entries: protocol.Traces,
      records: recording.StepRecord,
      operands: Any,
  ) -> dict:
    r"""The influence after a window of ``k`` steps in closed form:
    :math:`M^{e+k} = \Phi M^e + \sum_t \Psi_t I_t` with :math:`\Psi_t
    = J^{e+k} \cdots J^{t+1}` from one reverse scan of ``H x H`` products
    per sample, and :math:`\Psi_t I_t` in the relation form: the
    coefficients :math:`\Psi_t\, \partial h_t / \partial y_r` and one
    contraction over the steps per relation. ``J M`` is paid once per
    window instead of once per step."""
    if self.window_roll == "per_step" or not self.relation_form(compiled):
      body = lambda tr, rec: (self.roll(compiled, tr, rec, operands), None)
      entries, _ = jax.lax.scan(body, entries, records)
      return entries
    new = dict(entries)
    if self.partial:
      new.update(
          self._drtrl(compiled).roll_window(
              compiled, entries, records, operands[1]
          )
      )
    j = records.full.hidden  # (k, B, H, H)
    eye = jnp.broadcast_to(jnp.eye(j.shape[-1], dtype=j.dtype), j.shape[1:])
    step = lambda psi, j_t: (jnp.einsum("bhk,bkl->bhl", psi, j_t), psi)
    phi, psis = jax.lax.scan(step, eye, j, reverse=True)
    # One batched product for every relation: their outputs side by side.
    deltas = records.full.relations
    keys = [
        r
        for r in deltas
        if compiled.relations[r].key in self._skipped(compiled)
    ]
    flat = [jnp.reshape(deltas[r], deltas[r].shape[:3] + (-1,)) for r in keys]
    sizes = [f.shape[-1] for f in flat]
    joined = jnp.einsum("tbhk,tbko->tbho", psis, jnp.concatenate(flat, axis=-1))
    parts = jnp.split(joined, np.cumsum(sizes)[:-1], axis=-1)
    coefficients = {
        r: jnp.reshape(part, deltas[r].shape) for r, part in zip(keys, parts)
    }
    summed = self._influence(compiled, operands[2], coefficients, records.x)
    for path in self.full_paths(compiled):
      m = entries[_PREFIX + path]
      rolled = jnp.einsum("bij,bjn->bin", phi.astype(m.dtype), m)
      new[_PREFIX + path] = (rolled + summed[path].astype(m.dtype)).astype(
          m.dtype
      )
    return new

  def solve(
      self,
      compiled: compiler_lib.CompiledStep,
      entries: protocol.Traces,
      signals: protocol.Signals,
      operands: Any,
  ) -> tuple:
    full, rest, params = operands
    g = jnp.concatenate(
        [jnp.reshape(s, (s.shape[0], -1)) for s in signals.leaves], axis=-1
    )
    grads = {}
    for path, leaf in full.items():
      m = entries[_PREFIX + path]
      dw = jnp.einsum("bh,bhn->n", g.astype(m.dtype), m)
      grads[path] = jnp.reshape(dw, jnp.shape(leaf)).astype(leaf.dtype)
    rest_grads = (
        self._drtrl(compiled).solve(compiled, entries, signals, rest)
        if self.partial
        else None
    )
    return grads, rest_grads, jax.tree_util.tree_map(jnp.zeros_like, params)

  def verdicts(self, compiled: compiler_lib.CompiledStep) -> tuple:
    full = set(self.full_paths(compiled))
    random: tuple[str, ...] = (
        ("rtrl_random_step",) if influence.uses_rng(compiled) else ()
    )
    if influence.mixes_samples(compiled):
      random += ("rtrl_mixed_samples",)
    shared = {
        path
        for rel in compiled.relations
        if rel.key in self._skipped(compiled)
        for paths in rel.weights.values()
        for path in paths
    } - full
    out = []
    for p in compiled.parameters:
      # Memory outside hidden state is outside every influence.
      memory = tuple(r for r in p.reasons if r == "untraced_memory")
      if p.path in full:
        out.append(
            protocol.verdict(
                p, memory + random, compiler_lib.ParameterRole.FULL
            )
        )
      elif p.role == compiler_lib.ParameterRole.NON_TEMPORAL:
        out.append(protocol.verdict(p))
      else:
        shares = ("rtrl_shares_relation",) if p.path in shared else ()
        out.append(protocol.verdict(p, tuple(p.reasons) + shares))
    return tuple(out)

  def note(self, compiled: compiler_lib.CompiledStep) -> str:
    parts = []
    if influence.uses_rng(compiled):
      parts.append(
          "rtrl_random_step: the step draws random numbers from its rng; "
          "RTRL's per-sample Jacobians replay it on batches of one, whose "
          "draws differ. "
      )
    if influence.mixes_samples(compiled):
      parts.append(
          "rtrl_mixed_samples: the step combines samples (a reduction or "
          "sort along the batch axis, such as hk.BatchNorm's batch "
          "statistics); RTRL's per-sample Jacobians leave out how one "
          "sample's state moves another's. "
      )
    if self.partial:
      parts.append(
          f"rtrl(params={list(self.full_paths(compiled))}) keeps the full "
          "influence of those parameters only; the others use D-RTRL's "
          "traces (rtrl_shares_relation: a relation that a full parameter "
          "also feeds is left to the full influence). "
      )
    return "".join(parts)

  def check(
      self, compiled: compiler_lib.CompiledStep, traces: protocol.Traces
  ) -> None:
    def entries() -> str:
      hidden = influence.hidden_avals(compiled)
      batch = hidden[0].shape[0]
      num_h = sum(influence.size(a) // batch for a in hidden)
      num_p = sum(
          influence.size(influence.param_avals(compiled)[p])
          for p in self.full_paths(compiled)
      )
      return f"B x H x P = {batch} x {num_h} x {num_p}"

    influence.check_trace_budget(
        traces,
        _PREFIX,
        self.max_trace_bytes,
        learner="rtrl",
        entries=entries,
        remedies=(
            "a smaller batch, rtrl(model, params=[...]) for the recurrent "
            "weights alone (D-RTRL for the rest), d_rtrl (exact on "
            "per-position transitions)"
        ),
    )
