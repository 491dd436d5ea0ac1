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
r"""Unbiased online recurrent optimisation (Tallec & Ollivier, 2017).

RTRL's influence ``M_t = dh_t/dtheta`` (per sample ``H x P``) is replaced by
a rank-one estimate ``u_t theta_t^T`` with ``u`` of ``H`` and ``theta`` of
``P`` entries per sample. With random signs ``nu`` (one per hidden value,
drawn from the step's rng) and the immediate Jacobian ``I_t``:

.. math::
  u_t = \rho_0 J_t u_{t-1} + \rho_1 \nu, \quad
  \theta_t = \theta_{t-1} / \rho_0 + I_t^T \nu / \rho_1

with ``rho_0 = sqrt(|theta_{t-1}| / |J_t u_{t-1}|)`` and ``rho_1 =
sqrt(|I_t^T nu| / |nu|)`` per sample, the variance-reducing scalings.
``E[nu nu^T] = 1`` and the symmetry ``nu -> -nu`` make ``E[u_t theta_t^T] =
M_t``: the gradient ``(dL/dh . u) theta`` is unbiased. Memory is ``H + P``
per sample; a step costs ``I_t^T nu`` (from one batched VJP to the ETP
ops' outputs and their weight rules per sample, where every recurrent
parameter reaches the step through ETP ops; else one reverse-mode product
per sample) and one product through the step for ``J_t u`` (the
transpose of its VJP).
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from haiku_etp._src.core import state_layout
from haiku_etp._src.compiler import compiler as compiler_lib
from haiku_etp._src.compiler import recording
from haiku_etp._src.learners.algorithms import influence
from haiku_etp._src.learners.algorithms import protocol

_U = state_layout.UORO_U
_THETA = state_layout.UORO_THETA_PREFIX
PROJECTIONS = ("signs", "ones")


def _labels(path: str, shapes) -> list:
  """Trace labels of a parameter's theta: one, or one per piece."""
  if len(shapes) == 1:
    return [_THETA + path]
  return [f"{_THETA}{path}:{i}" for i in range(len(shapes))]


@dataclasses.dataclass(frozen=True)
class UORO(protocol.AlgorithmBase):
  """UORO's rank-one influence estimate per sample.

  Attributes:
    projection: ``"signs"`` (random signs, unbiased) or ``"ones"`` (``nu =
      1``: biased, kept to show that the signs are what makes it unbiased).
    eps: added to the norms in ``rho_0`` and ``rho_1`` (a zero trace at the
      start gives ``rho = 1``).
  """

  projection: str = "signs"
  eps: float = 1e-7
  name: str = "uoro"

  def __post_init__(self):
    if self.projection not in PROJECTIONS:
      raise ValueError(
          f"uoro: projection must be one of {PROJECTIONS}, got "
          f"{self.projection!r}."
      )
    if not (isinstance(self.eps, float) and self.eps > 0):
      raise ValueError(f"uoro: eps must be a float > 0, got {self.eps!r}.")

  @property
  def needs(self) -> protocol.StepNeeds:
    return protocol.StepNeeds(
        per_position=False, replay=True, random_projection=self.projection
    )

  def init(self, compiled: compiler_lib.CompiledStep) -> dict:
    hidden = influence.hidden_avals(compiled)
    batch = hidden[0].shape[0]
    num_h = sum(influence.size(a) // batch for a in hidden)
    avals = influence.param_avals(compiled)
    entries = {_U: jnp.zeros((batch, num_h), hidden[0].dtype)}
    for path, shapes in self._pieces(compiled).items():
      for label, shape in zip(_labels(path, shapes), shapes):
        entries[label] = jnp.zeros((batch, math.prod(shape)), avals[path].dtype)
    return entries

  def _pieces(self, compiled: compiler_lib.CompiledStep) -> dict:
    """``{path: piece shapes}``: theta is kept in the pieces in which the
    step records ``I^T nu`` (a GRU's gates apart), so that each piece's
    update is one fused pass."""
    layout = recording.projection_layout(
        compiled, influence.temporal_paths(compiled)
    )
    return {p: shapes for p, (_, shapes) in layout.items()}

  def operands(self, compiled: compiler_lib.CompiledStep, params: Any):
    leaves = dict(zip(compiled.param_paths, jax.tree_util.tree_leaves(params)))
    return params, {p: leaves[p] for p in influence.temporal_paths(compiled)}

  def roll(
      self,
      compiled: compiler_lib.CompiledStep,
      traces: protocol.Traces,
      record: recording.StepRecord,
      operands: Any,
  ) -> dict:
    params, _ = operands
    state, rng, x = record.replay
    nu = record.projection.nu
    projected, proj_sq = recording.projected_pieces(
        compiled, params, list(self._pieces(compiled)), record.projection
    )
    u = traces[_U]
    ju = recording.hidden_jvp(compiled, params, state, rng, x, u)
    pieces = self._pieces(compiled)
    labels = {p: _labels(p, shapes) for p, shapes in pieces.items()}
    sq = lambda v: jnp.sum(v * v, axis=-1)
    theta_norm = jnp.sqrt(
        sum(sq(traces[l]) for ls in labels.values() for l in ls)
    )
    proj_norm = jnp.sqrt(proj_sq)
    ju_norm = jnp.sqrt(sq(ju))
    nu_norm = jnp.sqrt(sq(nu))
    rho0 = jnp.sqrt((theta_norm + self.eps) / (ju_norm + self.eps))
    rho1 = jnp.sqrt((proj_norm + self.eps) / (nu_norm + self.eps))
    new = dict(traces)
    new[_U] = (rho0[:, None] * ju + rho1[:, None] * nu).astype(u.dtype)
    for p, ls in labels.items():
      for l, v in zip(ls, projected[p]):
        theta = traces[l]
        new[l] = (
            theta / rho0[:, None] + v.astype(theta.dtype) / rho1[:, None]
        ).astype(theta.dtype)
    return new

  def solve(
      self,
      compiled: compiler_lib.CompiledStep,
      traces: protocol.Traces,
      signals: protocol.Signals,
      operands: Any,
  ):
    leaves = operands[1]
    g = jnp.concatenate(
        [jnp.reshape(s, (s.shape[0], -1)) for s in signals.leaves], axis=-1
    )
    scale = jnp.sum(g.astype(traces[_U].dtype) * traces[_U], axis=-1)
    layout = recording.projection_layout(compiled, list(leaves))
    grads = {}
    for path, leaf in leaves.items():
      parts = [
          jnp.einsum("b,bn->n", scale.astype(traces[l].dtype), traces[l])
          for l in _labels(path, layout[path][1])
      ]
      dw = recording.join_pieces(layout[path], parts, batched=False)
      grads[path] = jnp.reshape(dw, jnp.shape(leaf)).astype(leaf.dtype)
    return jax.tree_util.tree_map(jnp.zeros_like, operands[0]), grads

  def verdicts(self, compiled: compiler_lib.CompiledStep) -> tuple:
    out = []
    for p in compiled.parameters:
      if p.role == compiler_lib.ParameterRole.NON_TEMPORAL:
        out.append(protocol.verdict(p))
      else:
        out.append(
            protocol.verdict(
                p, ("uoro_rank_one",), compiler_lib.ParameterRole.FULL
            )
        )
    return tuple(out)

  def note(self, compiled: compiler_lib.CompiledStep) -> str:
    del compiled
    return (
        "uoro_rank_one: UORO estimates each sample's influence by one "
        "random rank-one product: unbiased (random signs), not exact; its "
        "variance falls only by averaging over samples and steps. "
    )
