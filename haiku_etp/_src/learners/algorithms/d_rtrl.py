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
r"""D-RTRL and ES-D-RTRL as trace algorithms (:mod:`~haiku_etp._src.learners.algorithms.protocol`).

Both keep traces per ETP relation; their ``operands`` are the relations'
trainable operands (:func:`~haiku_etp._src.compiler.recording.relation_weights`), so
``solve`` returns one dict per relation shaped like its trainable operands:

* ``init(compiled) -> entries``: zero traces, ``{label: array}``;
* ``roll(compiled, entries, record, weights) -> entries``: one step forward
  with the step's :class:`~haiku_etp._src.compiler.recording.StepRecord`;
* ``solve(compiled, entries, signals, weights) -> grads``: the trace term of
  the window gradient from the learning signals ``dL/dh`` at the window's
  entry.

Trace labels are built from the compiler's relation keys and group names:
``"<relation key>:<operand>@<group>"`` for D-RTRL; ``"x:<input key>"``,
``"f:<relation key>@<group>"``, ``"one"`` and ``"steps"`` for ES-D-RTRL.
"""

import dataclasses
import numbers
from typing import Any, Callable, Optional, Sequence, Union

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.compiler import compiler as compiler_lib
from haiku_etp._src.core import closed_form
from haiku_etp._src.learners.algorithms import cross_group
from haiku_etp._src.compiler import recording
from haiku_etp._src.core import primitive
from haiku_etp._src.learners.algorithms import protocol


def _aval(shape, dtype: Any):
  return jax.ShapeDtypeStruct(tuple(shape), dtype)


def relation_avals(
    compiled: compiler_lib.CompiledStep, r: int, g: int
) -> tuple[Optional[primitive.Aval], primitive.Aval, dict[str, primitive.Aval]]:
  """``(x_aval, y_aval, weight_avals)`` of relation ``r`` as group ``g`` sees it.

  Input-free relations see the group's shape as ``y`` (their trace carries
  the group's batch and positions).
  """
  rel = compiled.relations[r]
  program = compiled.program
  node = program.nodes[rel.node]
  xi = rel.primitive.x_invar_index
  x_aval = None
  if xi is not None:
    a = program.aval(node.ins[xi])
    x_aval = _aval(a.shape, a.dtype)
  y = program.aval(node.outs[0])
  shape = compiled.groups[g].shape if xi is None else y.shape
  weights = {}
  for k, i in rel.primitive.trainable_invars(rel.params).items():
    a = program.aval(node.ins[i])
    weights[k] = _aval(a.shape, a.dtype)
  return x_aval, _aval(shape, y.dtype), weights


def drtrl_label(
    rel: compiler_lib.Relation, operand: str, group: compiler_lib.HiddenGroup
) -> str:
  """The D-RTRL trace label of one relation operand and group."""
  return f"{rel.key}:{operand}@{group.name}"


def _solve_relations(
    compiled: compiler_lib.CompiledStep, weights: Any, part
) -> list:
  """Sums ``part(r, g)`` over each relation's groups, in the weights' dtypes."""
  out = []
  for r, rel in enumerate(compiled.relations):
    total = {k: jnp.zeros_like(v) for k, v in weights[r].items()}
    for g in rel.groups:
      p = part(r, g)
      total = {k: total[k] + p[k].astype(total[k].dtype) for k in total}
    out.append(total)
  return out


def _cast_like(new: dict, old: dict) -> dict:
  """Keeps every trace in the dtype it was created with (scan carries)."""
  return {k: v.astype(old[k].dtype) for k, v in new.items()}


WINDOW_ROLLS = ("closed", "per_step")


def check_window_roll(window_roll) -> None:
  """Raises ``ValueError`` unless ``window_roll`` is one of
  :data:`WINDOW_ROLLS`."""
  if window_roll not in WINDOW_ROLLS:
    raise ValueError(
        f"window_roll must be one of {WINDOW_ROLLS}, got {window_roll!r}."
    )


def _scan_records(fn: Callable[..., Any], carry, records: recording.StepRecord):
  """``fn(carry, record)`` over a window's stacked records."""
  carry, _ = lax.scan(lambda c, rec: (fn(c, rec), None), carry, records)
  return carry


class _RelationTraces(protocol.AlgorithmBase):
  """What the relation-trace algorithms share: their operands are the
  relations' trainable operands, and nothing bounds their traces."""

  def operands(self, compiled: compiler_lib.CompiledStep, params: Any) -> list:
    return recording.relation_weights(compiled, params)


@dataclasses.dataclass(frozen=True)
class DRTRL(_RelationTraces):
  """Parameter-dimension traces, one per relation, operand and group.

  ``skip``: relation keys whose trace term is left out of ``solve`` (their
  parameters get their gradient from another algorithm).
  ``window_roll``: ``"closed"`` rolls a window of ``k > 1`` steps in closed
  form (:meth:`roll_window`); ``"per_step"`` rolls it one step at a time.
  """

  fast: bool = True
  max_cross_bytes: Optional[int] = None
  name: str = "d_rtrl"
  skip: frozenset = frozenset()
  window_roll: str = "closed"
  needs = protocol.StepNeeds(per_position=True)

  @property
  def cross_budget(self) -> Optional[int]:
    return self.max_cross_bytes

  def verdicts(self, compiled: compiler_lib.CompiledStep) -> tuple:
    return protocol.compiler_verdicts(compiled)

  def init(self, compiled: compiler_lib.CompiledStep) -> dict:
    entries = {}
    for r, rel in enumerate(compiled.relations):
      for g in rel.groups:
        trace = primitive.drtrl_init(
            rel.primitive,
            *relation_avals(compiled, r, g),
            compiled.groups[g].num_states,
            rel.params,
        )
        for k, v in trace.items():
          entries[drtrl_label(rel, k, compiled.groups[g])] = v
    entries.update(cross_group.init(compiled))
    return entries

  def _trace(
      self,
      compiled: compiler_lib.CompiledStep,
      entries: protocol.Traces,
      r: int,
      g: int,
  ) -> dict:
    rel = compiled.relations[r]
    group = compiled.groups[g]
    if rel.primitive.own_trace_layout(rel.params):
      # Every entry the op's init made (slots and their bookkeeping).
      head, tail = f"{rel.key}:", f"@{group.name}"
      return {
          label[len(head) : -len(tail)]: v
          for label, v in entries.items()
          if label.startswith(head) and label.endswith(tail)
      }
    return {k: entries[drtrl_label(rel, k, group)] for k in rel.weights}

  def roll(
      self,
      compiled: compiler_lib.CompiledStep,
      entries: protocol.Traces,
      record: recording.StepRecord,
      weights: Any,
  ) -> dict:
    new = dict(entries)
    for r, rel in enumerate(compiled.relations):
      for n, g in enumerate(rel.groups):
        old = self._trace(compiled, entries, r, g)
        trace = primitive.drtrl_update(
            rel.primitive,
            old,
            record.d[g],
            record.d_f[r][n],
            record.x[r],
            weights[r],
            rel.params,
            fast=self.fast,
        )
        for k, v in _cast_like(trace, old).items():
          new[drtrl_label(rel, k, compiled.groups[g])] = v
    return cross_group.roll(compiled, entries, new, record, weights, self.fast)

  def _per_step_why(self, compiled: compiler_lib.CompiledStep) -> str:
    """Why every trace rolls step by step (``""``: the closed form): the
    cross-group traces need the source's per-step traces unless all of them
    take the closed form."""
    if self.window_roll == "per_step":
      return "window_roll='per_step'"
    for plan in compiled.cross:
      why = cross_group.window_obstacle(compiled, plan)
      if why:
        key = compiled.relations[plan.relation].key
        return f"the cross-group traces of {key}: {why}"
    return cross_group.fields_per_step(compiled)

  def window_forms(self, compiled: compiler_lib.CompiledStep) -> list:
    """``(what, form, why)`` for each trace: how a window of ``k > 1``
    steps rolls it (``"closed"``, ``"accumulated"`` or ``"per_step"``,
    :func:`~haiku_etp._src.core.primitive.window_form`)."""
    why_all = self._per_step_why(compiled)
    if why_all:
      labels = [r.key for r in compiled.relations if r.groups] + [
          f"cross-group traces of {compiled.relations[p.relation].key}"
          for p in compiled.cross
      ]
      return [(label, "per_step", why_all) for label in labels]
    out = []
    for rel in compiled.relations:
      if not rel.groups:
        continue
      form = primitive.window_form(rel.primitive, rel.params, fast=self.fast)
      why = {
          "closed": "",
          "accumulated": (
              "fast=False: the generic rules"
              if rel.primitive.rules.drtrl_window is not None
              else f"{rel.primitive.name} has no drtrl_window rule"
          ),
          "per_step": (
              f"{rel.primitive.name} keeps a trace layout of its own and has "
              "no drtrl_window rule"
          ),
      }[form]
      out.append((rel.key, form, why))
    for plan in compiled.cross:
      key = compiled.relations[plan.relation].key
      out.append((f"cross-group traces of {key}", "closed", ""))
    return out

  def roll_window(
      self,
      compiled: compiler_lib.CompiledStep,
      entries: protocol.Traces,
      records: recording.StepRecord,
      weights: Any,
  ) -> dict:
    """The traces after a window of ``k`` steps, in closed form (one
    reverse scan of output-sized coefficients, one contraction over the
    window per relation); ``records`` are the window's, stacked."""
    if self._per_step_why(compiled):
      return _scan_records(
          lambda tr, rec: self.roll(compiled, tr, rec, weights),
          entries,
          records,
      )
    new = dict(entries)
    members: dict = {}
    for r, rel in enumerate(compiled.relations):
      for n, g in enumerate(rel.groups):
        members.setdefault(g, []).append((r, n))
    recursions = {
        ("group", g): closed_form.group_recursion(
            records.d[g].shape[1:], records.d[g].dtype, (g, rels)
        )
        for g, rels in members.items()
    }
    recursions.update(cross_group.window_recursions(compiled, weights))
    coefficients = closed_form.backward(recursions, records)
    for g, rels in members.items():
      group = compiled.groups[g]
      phi, cs = coefficients[("group", g)]
      for (r, n), c in zip(rels, cs):
        rel = compiled.relations[r]
        old = self._trace(compiled, entries, r, g)
        form = primitive.window_form(rel.primitive, rel.params, fast=self.fast)
        if form == "per_step":
          step = lambda tr, rec, r=r, n=n, g=g: primitive.drtrl_update(
              compiled.relations[r].primitive,
              tr,
              rec.d[g],
              rec.d_f[r][n],
              rec.x[r],
              weights[r],
              compiled.relations[r].params,
              fast=self.fast,
          )
          trace = _scan_records(step, old, records)
        else:
          trace = primitive.drtrl_window(
              rel.primitive,
              old,
              phi,
              c,
              records.x[r],
              weights[r],
              rel.params,
              fast=self.fast,
          )
        for k, v in _cast_like(trace, old).items():
          new[drtrl_label(rel, k, group)] = v
    return cross_group.roll_window(
        compiled, entries, new, records, weights, self.fast, coefficients
    )

  def solve(
      self,
      compiled: compiler_lib.CompiledStep,
      entries: protocol.Traces,
      signals: protocol.Signals,
      weights: Any,
  ) -> list:
    groups = signals.groups
    out = _solve_relations(
        compiled,
        weights,
        lambda r, g: primitive.drtrl_solve(
            compiled.relations[r].primitive,
            self._trace(compiled, entries, r, g),
            groups[g],
            weights[r],
            compiled.relations[r].params,
            fast=self.fast,
        ),
    )
    cross = cross_group.solve(compiled, entries, groups, weights)
    for r, part in cross.items():
      out[r] = {k: v + part[k].astype(v.dtype) for k, v in out[r].items()}
    for r, rel in enumerate(compiled.relations):
      if rel.key in self.skip:
        out[r] = {k: jnp.zeros_like(v) for k, v in out[r].items()}
    return out


Decay = Union[float, Sequence[float]]


def parse_decay(decay: Optional[Decay], rank: Optional[int]) -> tuple:
  """``(alpha_x, alpha_f)`` from a decay (float or pair) or an int rank.

  A rank ``n >= 1`` gives the decay whose exponential window has the same
  centre of mass as ``n`` equal steps: ``alpha = (n - 1) / (n + 1)``.

  Raises:
    ValueError: for both or a bad one of ``decay`` and ``rank``.
    TypeError: for a decay or rank of the wrong type.
  """
  if decay is not None and rank is not None:
    raise ValueError(
        f"Give decay or rank, not both (got decay={decay!r}, rank={rank!r})."
    )
  if rank is not None:
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
      raise TypeError(f"rank must be an int >= 1, got {rank!r}.")
    if rank < 1:
      raise ValueError(f"rank must be >= 1, got {rank}.")
    a = (rank - 1) / (rank + 1)
    return float(a), float(a)
  if decay is None:
    return 0.0, 0.0
  if isinstance(decay, (bool, numbers.Integral)):
    raise TypeError(
        f"decay must be a float or an (alpha_x, alpha_f) pair, got the int "
        f"{decay!r}; write decay={float(decay)!r}, or an int rank goes in "
        "rank=."
    )
  if isinstance(decay, numbers.Real):
    pair = (float(decay), float(decay))
  elif (
      isinstance(decay, (tuple, list))
      and len(decay) == 2
      and all(
          isinstance(a, numbers.Real) and not isinstance(a, bool) for a in decay
      )
  ):
    pair = (float(decay[0]), float(decay[1]))
  else:
    raise TypeError(
        "decay must be a float or an (alpha_x, alpha_f) pair of floats, got "
        f"{decay!r}; an int rank goes in rank=."
    )
  for a in pair:
    if not np.isfinite(a) or not 0.0 <= a < 1.0:
      raise ValueError(f"Decays must lie in [0, 1), got {decay!r}.")
  return pair


_OVER_BUDGET = "cross_trace_over_budget"
_ES_NO_CROSS = "es_d_rtrl_no_cross_traces"
_ES_NOTE = (
    "es_d_rtrl_factorised_trace: ES-D-RTRL factorises the trace; it is exact "
    "only at T = 1 or with decay=(lam, 0) on a uniform leak lam. "
)
_ES_CROSS_NOTE = (
    "es_d_rtrl_no_cross_traces: ES-D-RTRL keeps no cross-group traces, so a "
    "parameter's path from one hidden group into another (cut_memory_path, "
    "relation_through_cut) gets only the in-window gradient. "
)
_FUSED_NOTE = (
    "form='fused' also drops the one-step credit through recurrent "
    "weights and keeps only an alpha_f share of the credit through a "
    "loss that reads the state before the step writes it. "
)


@dataclasses.dataclass(frozen=True)
class ESDRTRL(_RelationTraces):
  """Input-side traces (one per input value) and output-side traces.

  ``fused``: the gradient of each step comes from the traces after the step
  (:meth:`fused_solve`) instead of the window form's entry traces plus the
  in-window VJP; with ``alpha_f = 0`` it keeps no output-side traces.
  """

  alpha_x: float = 0.0
  alpha_f: float = 0.0
  fused: bool = False
  name: str = "es_d_rtrl"
  window_roll: str = "per_step"

  @property
  def keeps_f(self) -> bool:
    """Whether the output-side traces are kept (not for fused at 0)."""
    return not (self.fused and self.alpha_f == 0.0)

  @property
  def form(self) -> str:
    return "fused" if self.fused else "window"

  @property
  def needs(self) -> protocol.StepNeeds:
    return protocol.StepNeeds(
        per_position=self.keeps_f,
        previous_signal=self.fused and self.alpha_f != 0.0,
    )

  def verdicts(self, compiled: compiler_lib.CompiledStep) -> tuple:
    # The compiler plans no cross-group traces for ES-D-RTRL (its budget is
    # 0); the paths they would carry are its own cut, not a budget to raise.
    out = []
    for v in protocol.compiler_verdicts(
        compiled,
        lambda p: ()
        if p.role == compiler_lib.ParameterRole.NON_TEMPORAL
        else ("es_d_rtrl_factorised_trace",),
    ):
      reasons = tuple(
          _ES_NO_CROSS if r == _OVER_BUDGET else r for r in v.reasons
      )
      out.append(v._replace(reasons=reasons))
    return tuple(out)

  def note(self, compiled: compiler_lib.CompiledStep) -> str:
    cut = any(_OVER_BUDGET in p.reasons for p in compiled.parameters)
    return (
        _ES_NOTE
        + (_ES_CROSS_NOTE if cut else "")
        + (_FUSED_NOTE if self.fused else "")
    )

  def init(self, compiled: compiler_lib.CompiledStep) -> dict:
    entries = {}
    for r, rel in enumerate(compiled.relations):
      if not rel.groups:
        continue
      x_aval = relation_avals(compiled, r, rel.groups[0])[0]
      if x_aval is not None:
        if self.alpha_x and not jnp.issubdtype(x_aval.dtype, jnp.inexact):
          raise ValueError(
              f"es_d_rtrl filters each op's input with alpha_x = "
              f"{self.alpha_x}, but {rel.key} reads integer inputs "
              f"({rel.primitive.name}: ids), which cannot be filtered; use "
              "decay=(0.0, alpha_f) or d_rtrl."
          )
        entries[f"x:{rel.input_key}"] = jnp.zeros(x_aval.shape, x_aval.dtype)
      for g in rel.groups if self.keeps_f else ():
        group = compiled.groups[g]
        entries[f"f:{rel.key}@{group.name}"] = primitive.pp_init(
            rel.primitive,
            *relation_avals(compiled, r, g),
            group.num_states,
            rel.params,
        )
    dtype = compiled.groups[0].dtype
    entries["one"] = jnp.zeros((), dtype)
    entries["steps"] = jnp.zeros((), jnp.int32)
    return entries

  def roll(
      self,
      compiled: compiler_lib.CompiledStep,
      entries: protocol.Traces,
      record: recording.StepRecord,
      weights: Any,
  ) -> dict:
    del weights
    ax, af = self.alpha_x, self.alpha_f
    new = dict(entries)
    rolled = set()
    for r, rel in enumerate(compiled.relations):
      key = f"x:{rel.input_key}"
      if key in entries and key not in rolled:
        # One input trace per input value, however many relations read it.
        rolled.add(key)
        x_t = record.x[r].astype(entries[key].dtype)
        # With alpha_x = 0 the trace is the input itself (integer ids too).
        new[key] = x_t if not ax else ax * entries[key] + x_t
      for n, g in enumerate(rel.groups if self.keeps_f else ()):
        key = f"f:{rel.key}@{compiled.groups[g].name}"
        f = entries[key]
        d_f = record.d_f[r][n].astype(f.dtype)
        if af == 0.0:
          new[key] = d_f
        else:
          mixed = primitive.mix_states(record.d[g].astype(f.dtype), f)
          new[key] = af * mixed + (1.0 - af) * d_f
    new["one"] = ax * entries["one"] + 1.0
    new["steps"] = entries["steps"] + 1
    return new

  def window_forms(self, compiled: compiler_lib.CompiledStep) -> list:
    """Every trace takes the closed form, or none (``window_roll=
    "per_step"``, the default: input- and output-sized traces cost less to
    roll in the window's loop)."""
    form = "per_step" if self.window_roll == "per_step" else "closed"
    why = (
        "window_roll='per_step', ES-D-RTRL's default: its traces are small"
        if form == "per_step"
        else ""
    )
    return [("input- and output-side traces", form, why)]

  def roll_window(
      self,
      compiled: compiler_lib.CompiledStep,
      entries: protocol.Traces,
      records: recording.StepRecord,
      weights: Any,
  ) -> dict:
    r"""The traces after a window of ``k`` steps in closed form: the input
    side :math:`\epsilon_x \leftarrow \alpha_x^k \epsilon_x + \sum_t
    \alpha_x^{k-1-t} x^t` (one weighted sum over the steps), the output side
    through the reverse scan of D-RTRL's window with every block scaled by
    :math:`\alpha_f`."""
    if self.window_roll == "per_step" or self.fused:
      return _scan_records(
          lambda tr, rec: self.roll(compiled, tr, rec, weights),
          entries,
          records,
      )
    ax, af = self.alpha_x, self.alpha_f
    k = jax.tree_util.tree_leaves(records)[0].shape[0]
    new = dict(entries)
    dtype = entries["one"].dtype
    # alpha_x^(k-1-t): what step t's input weighs at the window's end.
    powers = jnp.asarray(ax, dtype) ** jnp.arange(k - 1, -1, -1, dtype=dtype)
    done = set()
    for r, rel in enumerate(compiled.relations):
      key = f"x:{rel.input_key}"
      if key in entries and key not in done:
        done.add(key)
        x = records.x[r].astype(entries[key].dtype)
        if not ax:
          new[key] = x[-1]
        else:
          weighted = jnp.tensordot(powers.astype(x.dtype), x, axes=1)
          new[key] = (ax**k) * entries[key] + weighted
    members: dict = {}
    for r, rel in enumerate(compiled.relations):
      for n, g in enumerate(rel.groups if self.keeps_f else ()):
        members.setdefault(g, []).append((r, n))
    if af == 0.0:
      for g, rels in members.items():
        for r, n in rels:
          key = f"f:{compiled.relations[r].key}@{compiled.groups[g].name}"
          new[key] = records.d_f[r][n][-1].astype(entries[key].dtype)
    elif members:
      scaled = records._replace(
          d=tuple(jnp.asarray(af, d.dtype) * d for d in records.d)
      )
      recursions = {
          g: closed_form.group_recursion(
              scaled.d[g].shape[1:], scaled.d[g].dtype, (g, rels)
          )
          for g, rels in members.items()
      }
      coefficients = closed_form.backward(recursions, scaled)
      for g, rels in members.items():
        phi, cs = coefficients[g]
        for (r, n), c in zip(rels, cs):
          key = f"f:{compiled.relations[r].key}@{compiled.groups[g].name}"
          f = entries[key]
          value = primitive.mix_states(phi.astype(f.dtype), f) + (
              1.0 - af
          ) * jnp.sum(c, axis=0).astype(f.dtype)
          new[key] = value.astype(f.dtype)
    one = entries["one"]
    new["one"] = (ax**k) * one + jnp.sum(powers).astype(one.dtype)
    new["steps"] = entries["steps"] + k
    return new

  def solve(
      self,
      compiled: compiler_lib.CompiledStep,
      entries: protocol.Traces,
      signals: protocol.Signals,
      weights: Any,
  ) -> list:
    groups = signals.groups
    steps = entries["steps"]
    dtype = entries["one"].dtype
    correction = jnp.where(
        steps > 0, 1.0 - jnp.asarray(self.alpha_f, dtype) ** steps, 1.0
    ).astype(dtype)
    rels = compiled.relations
    return _solve_relations(
        compiled,
        weights,
        lambda r, g: primitive.pp_solve(
            rels[r].primitive,
            entries.get(f"x:{rels[r].input_key}"),
            entries["one"],
            entries[f"f:{rels[r].key}@{compiled.groups[g].name}"],
            groups[g],
            weights[r],
            rels[r].params,
            correction,
        ),
    )

  def fused_solve(
      self,
      compiled: compiler_lib.CompiledStep,
      old: protocol.Traces,
      new,
      prev_signals,
      immediate,
      weights: Any,
  ) -> list:
    r"""The fused gradient of one step, one contraction per relation.

    .. math::
      \nabla\theta_t \approx \mathrm{xy\_to\_dw}\Bigl(\epsilon_x^t,
        \bigl[\alpha_f \textstyle\sum_a \epsilon_f^{t-1}[\dots, a]\,
        g^{t-1}[\dots, a] + (1 - \alpha_f)\, \partial L_t / \partial y_t
        \bigr] / c_t\Bigr)

    the trace after the step contracted with the step's loss: the output
    side ``eps_f^t`` of :meth:`roll` with ``D^t`` and ``D_f^t`` replaced by
    the step's own derivatives, ``g^{t-1} = dL_t/dh^{t-1}`` and ``dL_t/dy_t``.

    Args:
      compiled: the compiled step.
      old: the traces at the step's entry (for ``eps_f^{t-1}``).
      new: the traces after :meth:`roll` (``eps_x^t``, the step count).
      prev_signals: per group, ``dL_t / dh^{t-1}`` (unused at
        ``alpha_f = 0``).
      immediate: per traced relation, ``dL_t / dy_t``.
      weights: per relation, its trainable operands.

    Returns:
      One dict per relation shaped like its trainable operands.
    """
    af = self.alpha_f
    dtype = new["one"].dtype
    # 1 - af**n with n >= 1 after the roll; exactly 1 at af = 0.
    correction = (1.0 - jnp.asarray(af, dtype) ** new["steps"]).astype(dtype)
    out = []
    for r, rel in enumerate(compiled.relations):
      if not rel.groups:
        out.append({k: jnp.zeros_like(v) for k, v in weights[r].items()})
        continue
      x_trace = new.get(f"x:{rel.input_key}")
      signals = [(1.0 - af) * immediate[r]]
      for g in rel.groups if af else ():
        f = old[f"f:{rel.key}@{compiled.groups[g].name}"]
        part = af * jnp.sum(f * prev_signals[g].astype(f.dtype), axis=-1)
        # Input-free ops see the group's shape, wider than their output.
        if part.shape == signals[0].shape:
          signals[0] = signals[0] + part.astype(signals[0].dtype)
        else:
          signals.append(part)
      total: Optional[dict] = None
      for sig in signals:
        dw = primitive.pp_signal_dw(
            rel.primitive,
            x_trace,
            new["one"],
            sig / correction.astype(sig.dtype),
            weights[r],
            rel.params,
        )
        total = dw if total is None else {k: total[k] + dw[k] for k in dw}
      assert total is not None  # signals holds at least the first
      out.append(_cast_like(total, weights[r]))
    return out
