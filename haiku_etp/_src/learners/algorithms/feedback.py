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
r"""e-prop's feedback variants (Bellec et al., 2020) and RFLO (Murray, 2019).

Both keep D-RTRL's eligibility traces (for e-prop's LIF/ALIF networks these
are e-prop's traces, the readout's leak filtered in by the cross-group
traces; for a leaky rate network they are RFLO's ``P_ij``) and the paper's
learning signal: the instantaneous ``dL_t/dh_t``, with the recurrent
weights' inputs gradient-stopped in the step's VJP as in the traces, so the
gradient is ``sum_t L_t . e_t``, the exact gradient of the network whose
recurrent inputs are gradient-stopped (D-RTRL's window form backpropagates
each step through the recurrent weights too). The error reaches the
network through a feedback matrix ``B`` at the readout instead of the
readout's weights ``W``,

.. math::
  L_{j,t} = \sum_k B_{jk}\, \partial L / \partial y_{k,t}.

``B`` stands in for ``W`` wherever credit crosses the readout backwards: in
the step's VJP (the readout is bound as ``op(sg(x), W) + op(x, B) -
sg(op(x, B))``, so its value and its own gradient are unchanged) and in the
cross-group traces through it. ``feedback="symmetric"`` is ``B = W``: that
cut form of D-RTRL, exactly (on a network without recurrent weights, D-RTRL's
and BPTT's gradient). ``"random"``: ``B`` is drawn once from
``seed`` (normal, scaled by ``1/sqrt(fan-in)`` like the readout's default
initialiser) and kept, fixed, in the learner state (checkpointed with it,
shared by every sample, kept across resets). ``"adaptive"``: ``B`` starts
random and relaxes toward the readout's current weights at every step, ``B
<- B + rate (W - B)``, so it aligns with ``W`` as training goes (Bellec et
al.'s adaptive e-prop lets ``B`` follow ``W``'s updates).
"""

import dataclasses
from typing import Any, Optional

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.core import state_layout
from haiku_etp._src.compiler import compiler as compiler_lib
from haiku_etp._src.compiler import recording
from haiku_etp._src.core import program as program_lib
from haiku_etp._src.learners.algorithms import protocol
from haiku_etp._src.learners.algorithms import d_rtrl as d_rtrl_lib

FEEDBACKS = ("symmetric", "random", "adaptive")
PREFIX = state_layout.FEEDBACK_PREFIX


def readout_relation(
    compiled: compiler_lib.CompiledStep, readout: Optional[str]
) -> int:
  """The index of the readout relation that the feedback replaces.

  ``readout`` is the path of its weight (``"leaky_readout/w"``); ``None``
  picks the last relation of the step (in program order) whose input
  depends on hidden state.

  Raises:
    ValueError: for a path no relation uses, or a step with no relation on
      hidden state.
  """
  order = sorted(
      range(len(compiled.relations)), key=lambda r: compiled.relations[r].node
  )
  if readout is not None:
    for r in reversed(order):
      if any(readout in p for p in compiled.relations[r].weights.values()):
        return r
    used = sorted(
        {
            p
            for rel in compiled.relations
            for ps in rel.weights.values()
            for p in ps
        }
    )  # pyformat: disable
    raise ValueError(
        f"readout={readout!r} is not the weight of any ETP op of this step; "
        f"the ops' parameters are {used}."
    )
  program = compiled.program
  num_h = len(compiled.hidden)
  deps = program_lib.dependencies(
      program,
      {
          compiled.hidden_in(leaf): 1 << k
          for k, leaf in enumerate(compiled.hidden)
      },
      {
          id(program.nodes[rel.node]): 1 << (num_h + r)
          for r, rel in enumerate(compiled.relations)
      },
  )  # pyformat: disable
  outs = [compiled.hidden_out(leaf) for leaf in compiled.hidden]
  for r in reversed(order):
    rel = compiled.relations[r]
    xi = rel.primitive.x_invar_index
    if xi is None:
      continue
    a = program.nodes[rel.node].ins[xi]
    reads = 0 if isinstance(a, recording.Lit) else deps.get(a, 0)
    reads &= (1 << num_h) - 1
    if not reads:
      continue
    # A readout's output feeds no hidden state that its input comes from.
    feeds = sum(
        1 << k
        for k, o in enumerate(outs)
        if not isinstance(o, recording.Lit)
        and deps.get(o, 0) >> (num_h + r) & 1
    )
    if reads & feeds:
      break
    return r
  raise ValueError(
      "The last ETP op of this step that reads hidden state feeds that state "
      "back (or there is none), so there is no ETP readout for the feedback "
      "to replace: read out through haiku_etp.Linear or LeakyReadout, or "
      "name the readout weight with readout='<module>/w'."
  )


@dataclasses.dataclass(frozen=True)
class Feedback(protocol.AlgorithmBase):
  """D-RTRL's traces with the learning signal through a feedback matrix.

  Attributes:
    feedback: ``"symmetric"``, ``"random"`` or ``"adaptive"``.
    seed: the seed ``B`` is drawn from (random and adaptive).
    rate: the adaptive feedback's relaxation per step, in ``(0, 1]``.
    readout: the path of the readout weight (``None``: the last ETP op on
      hidden state).
    max_cross_bytes: D-RTRL's cross-group budget.
    name: the learner's name (``"eprop"`` or ``"rflo"``).
  """

  feedback: str = "symmetric"
  seed: int = 0
  rate: float = 1e-3
  readout: Optional[str] = None
  max_cross_bytes: Optional[int] = compiler_lib.DEFAULT_CROSS_BYTES
  name: str = "eprop"

  def __post_init__(self):
    if self.feedback not in FEEDBACKS:
      raise ValueError(
          f"{self.name}: feedback must be one of {FEEDBACKS}, got "
          f"{self.feedback!r}."
      )
    if isinstance(self.seed, bool) or not isinstance(
        self.seed, (int, np.integer)
    ):
      raise ValueError(
          f"{self.name}: feedback_seed must be an int, got {self.seed!r}."
      )
    if not (isinstance(self.rate, (float, int)) and 0 < self.rate <= 1):
      raise ValueError(
          f"{self.name}: feedback_rate must be a number in (0, 1], got "
          f"{self.rate!r}."
      )
    if self.readout is not None and not isinstance(self.readout, str):
      raise ValueError(
          f"{self.name}: readout must be a parameter path such as "
          f"'leaky_readout/w', got {self.readout!r}."
      )
    compiler_lib.check_cross_budget(self.max_cross_bytes)

  @property
  def _drtrl(self) -> d_rtrl_lib.DRTRL:
    return d_rtrl_lib.DRTRL(max_cross_bytes=self.max_cross_bytes)

  def window_forms(self, compiled: compiler_lib.CompiledStep) -> list:
    return self._drtrl.window_forms(compiled)

  @property
  def needs(self) -> protocol.StepNeeds:
    return protocol.StepNeeds(
        per_position=True,
        feedback=None if self.feedback == "symmetric" else PREFIX,
        cut_recurrent=True,
    )

  @property
  def cross_budget(self) -> Optional[int]:
    return self.max_cross_bytes

  def _operand(self, compiled: compiler_lib.CompiledStep) -> tuple:
    """``(relation, operand name, shape)`` the feedback stands in for."""
    r = readout_relation(compiled, self.readout)
    shapes = recording.operand_shapes(compiled, r)
    wide = [k for k, s in shapes.items() if len(s) >= 2]
    if not wide:
      raise ValueError(
          f"{self.name}: the readout {compiled.relations[r].key} has no "
          f"weight matrix to replace (operands {shapes}); name another with "
          "readout=..."
      )
    return r, wide[0], shapes[wide[0]]

  def init(self, compiled: compiler_lib.CompiledStep) -> dict:
    entries = self._drtrl.init(compiled)
    if self.feedback != "symmetric":
      r, name, shape = self._operand(compiled)
      dtype = recording.operand_dtype(compiled, r, name)
      fan_in = int(np.prod(shape[:-1]))
      b = jax.random.normal(jax.random.PRNGKey(self.seed), shape, dtype)
      entries[PREFIX + str(r)] = b / np.sqrt(fan_in).astype(dtype)
    return entries

  def _matrix(
      self, compiled: compiler_lib.CompiledStep, traces: protocol.Traces
  ) -> Optional[tuple]:
    if self.feedback == "symmetric":
      return None
    r, name, _ = self._operand(compiled)
    return r, name, lax.stop_gradient(traces[PREFIX + str(r)])

  def operands(self, compiled: compiler_lib.CompiledStep, params: Any) -> list:
    return self._drtrl.operands(compiled, params)

  def _with_feedback(
      self,
      compiled: compiler_lib.CompiledStep,
      traces: protocol.Traces,
      weights: Any,
  ) -> list:
    """The operands with ``B``'s value in the readout's weight (its
    derivative still the weight's): the cross-group traces through the
    readout then carry the feedback too."""
    found = self._matrix(compiled, traces)
    if found is None:
      return weights
    r, name, b = found
    out = list(weights)
    w = out[r][name]
    out[r] = dict(out[r])
    out[r][name] = w + lax.stop_gradient(b.astype(w.dtype) - w)
    return out

  def roll(
      self,
      compiled: compiler_lib.CompiledStep,
      traces: protocol.Traces,
      record: recording.StepRecord,
      operands: Any,
  ) -> dict:
    new = self._drtrl.roll(
        compiled,
        traces,
        record,
        self._with_feedback(compiled, traces, operands),
    )
    found = self._matrix(compiled, traces)
    if found is not None:
      r, name, b = found
      if self.feedback == "adaptive":
        w = lax.stop_gradient(operands[r][name]).astype(b.dtype)
        b = b + jnp.asarray(self.rate, b.dtype) * (w - b)
      new[PREFIX + str(r)] = b
    return new

  def roll_window(
      self,
      compiled: compiler_lib.CompiledStep,
      traces: protocol.Traces,
      records: recording.StepRecord,
      operands: Any,
  ) -> dict:
    """D-RTRL's closed-form window roll; the adaptive matrix relaxes ``k``
    steps towards the (fixed) weight at once."""
    new = self._drtrl.roll_window(
        compiled,
        traces,
        records,
        self._with_feedback(compiled, traces, operands),
    )
    found = self._matrix(compiled, traces)
    if found is not None:
      r, name, b = found
      if self.feedback == "adaptive":
        k = jax.tree_util.tree_leaves(records)[0].shape[0]
        w = lax.stop_gradient(operands[r][name]).astype(b.dtype)
        b = w + jnp.asarray(1.0 - self.rate, b.dtype) ** k * (b - w)
      new[PREFIX + str(r)] = b
    return new

  def solve(
      self,
      compiled: compiler_lib.CompiledStep,
      traces: protocol.Traces,
      signals: protocol.Signals,
      operands: Any,
  ) -> list:
    return self._drtrl.solve(
        compiled,
        traces,
        signals,
        self._with_feedback(compiled, traces, operands),
    )

  def verdicts(self, compiled: compiler_lib.CompiledStep) -> tuple:
    if self.feedback == "symmetric":
      return self._drtrl.verdicts(compiled)
    r, _, _ = self._operand(compiled)
    readout = {p for ps in compiled.relations[r].weights.values() for p in ps}
    out = []
    for v in self._drtrl.verdicts(compiled):
      if v.path in readout or not _upstream(compiled, r, v.path):
        out.append(v)
      else:
        out.append(protocol.with_reasons(v, "feedback_matrix"))
    return tuple(out)

  def note(self, compiled: compiler_lib.CompiledStep) -> str:
    if self.feedback == "symmetric":
      return ""
    r, _, _ = self._operand(compiled)
    return (
        f"feedback_matrix: the learning signal reaches the network through "
        f"the {self.feedback} feedback matrix at the readout "
        f"{compiled.relations[r].key} instead of its weights, so every "
        "parameter before it gets a feedback-aligned direction, not the "
        "gradient. "
    )


def _upstream(compiled: compiler_lib.CompiledStep, r: int, path: str) -> bool:
  """Whether parameter ``path`` acts before relation ``r`` in the step (its
  credit crosses the readout backwards)."""
  program = compiled.program
  index = compiled.param_paths.index(path)
  deps = program_lib.dependencies(program, {program.invars[index]: 1})
  rel = compiled.relations[r]
  xi = rel.primitive.x_invar_index
  a = program.nodes[rel.node].ins[xi]
  return not isinstance(a, recording.Lit) and bool(deps.get(a, 0))
