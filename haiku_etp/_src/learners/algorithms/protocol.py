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
r"""The learner protocol: what a trace algorithm is to the shared driver.

A learner is a :class:`TraceAlgorithm` plus the driver in
:mod:`~haiku_etp._src.learners.driver` (the compile cache, the state layout, the
checks) and the gradient forms (:mod:`~haiku_etp._src.learners.forms.window`,
:mod:`~haiku_etp._src.learners.forms.online_loop`, :mod:`~haiku_etp._src.learners.forms.fused`). The
driver knows no algorithm by name: it runs each step for what the
algorithm's :class:`StepNeeds` ask, rolls the algorithm's traces with the
step's record, and pulls the algorithm's solve back to the parameters
through the VJP of its ``operands``. ``docs/design.md``, "The learner
protocol", says how to write one.

In the window form, for a window of ``k`` steps entered with hidden state
:math:`h^e`,

.. math::
  \nabla_\theta L = \frac{\partial L}{\partial \theta}\Big|_{h^e}
    + \Bigl(\frac{\partial \mathrm{operands}}{\partial \theta}\Bigr)^{\!\top}
      \mathrm{solve}\Bigl(\mathrm{traces}^e,
      \frac{\partial L}{\partial h^e}\Bigr)

then ``roll`` moves the traces through the window's steps.
"""

import dataclasses
from typing import (
    Any,
    Callable,
    Iterable,
    NamedTuple,
    Optional,
    Protocol,
    runtime_checkable,
)

import jax

from haiku_etp._src.compiler import recording
from haiku_etp._src.compiler import compiler as compiler_lib

FORMS = ("window", "fused")

# A trace algorithm's learner-state entries, ``{label: array}``.
Traces = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class StepNeeds:
  """What a trace algorithm needs the driver to compute at each step.

  Attributes:
    per_position: the compiled program's per-position record: each
      relation's input ``x``, the transition blocks ``D``, the tail
      Jacobians ``D_f`` and the cross-group hops' derivatives
      (:class:`~haiku_etp._src.compiler.recording.StepRecord`). Without, the record
      holds the relation inputs only.
    full_jacobian: per sample, the whole Jacobian of the new hidden state
      with respect to the old one (every group, every position) and with
      respect to the parameters in ``full_jacobian_params``
      (:class:`~haiku_etp._src.compiler.recording.FullJacobian`).
    relation_form: with ``full_jacobian``, record ``d h_t / d theta`` in
      the relation form (per relation, ``d h_t / d y_r``; valid where the
      parameters reach the step only through ETP ops,
      :func:`~haiku_etp._src.compiler.recording.projects_by_relations`).
    full_jacobian_params: paths of the parameters whose immediate Jacobian
      ``dh_t/dtheta`` the record holds (``None``: every parameter that
      reaches hidden state).
    previous_signal: the fused form also needs ``dL_t / dh^{t-1}``.
    replay: the record also holds the step's inputs ``(model_state, rng,
      x)`` (``record.replay``), so that ``roll`` can run products through
      the step with its traces (:func:`~haiku_etp._src.compiler.recording.hidden_jvp`).
    random_projection: ``"signs"``: per sample, random signs ``nu`` over the
      hidden values, drawn from the step's rng, and ``nu^T dh_t/dtheta``
      for every parameter that reaches hidden state (``record.projection``,
      a :class:`~haiku_etp._src.compiler.recording.Projection`); ``"ones"`` uses
      ``nu = 1`` (a biased variant, for tests); ``None``: not recorded.
    feedback: a trace-label prefix: the entry ``<prefix><r>`` of the
      algorithm's traces is a feedback matrix for relation ``r`` (shaped like
      one of its trainable operands, :mod:`~haiku_etp._src.learners.algorithms.feedback`): in
      the step's VJP that relation's input gets its cotangent through the
      matrix instead of the operand, while the forward value and the
      operand's own gradient are unchanged. ``None``: the step's own VJP.
    cut_recurrent: the inputs of the recurrent relations
      (:func:`~haiku_etp._src.compiler.recording.recurrent_relations`) are
      gradient-stopped in the step's VJP too, so no credit crosses the
      recurrent weights anywhere (e-prop's learning signal, the instantaneous
      ``dL_t/dh_t``).
  """

  per_position: bool = True
  full_jacobian: bool = False
  full_jacobian_params: Optional[tuple[str, ...]] = None
  relation_form: bool = False
  previous_signal: bool = False
  replay: bool = False
  random_projection: Optional[str] = None
  feedback: Optional[str] = None
  cut_recurrent: bool = False


class ParameterVerdict(NamedTuple):
  """An algorithm's statement about one parameter's gradient.

  Attributes:
    path: the parameter's path.
    role: a ``haiku_etp.compiler.ParameterRole`` (equal to its string):
      ``"non-temporal"`` (reaches no hidden state), ``"traced"``,
      ``"untraced"`` (reaches hidden state outside ETP ops) or ``"full"``
      (its influence on every hidden value is kept).
    exact: whether the algorithm's gradient equals BPTT's for it.
    reasons: codes that make it approximate (``report`` explains them).
  """

  path: str
  role: str
  exact: bool
  reasons: tuple[str, ...] = ()


def verdict(
    param: compiler_lib.ParameterStatus,
    reasons: Iterable[str] = (),
    role: Optional[compiler_lib.ParameterRole] = None,
) -> ParameterVerdict:
  """The verdict on ``param``: exact unless ``reasons`` name a cut; its role
  is the compiler's unless ``role`` is given (``FULL`` for influence
  learners)."""
  reasons = tuple(reasons)
  return ParameterVerdict(
      param.path, param.role if role is None else role, not reasons, reasons
  )


def with_reasons(v: ParameterVerdict, *reasons: str) -> ParameterVerdict:
  """``v`` made approximate by ``reasons`` (added after its own)."""
  return v._replace(exact=False, reasons=v.reasons + reasons)


def compiler_verdicts(
    compiled: compiler_lib.CompiledStep,
    extra: Callable[[compiler_lib.ParameterStatus], Iterable[str]] = (
        lambda p: ()
    ),
) -> tuple[ParameterVerdict, ...]:
  """The compiler's per-parameter analysis as verdicts (D-RTRL's), with
  ``extra(p)`` reasons added to each parameter's own."""
  return tuple(
      verdict(p, tuple(p.reasons) + tuple(extra(p)))
      for p in compiled.parameters
  )


@runtime_checkable
class TraceAlgorithm(Protocol):
  """A trace algorithm: immutable, every method pure.

  Attributes:
    name: the learner's name (``Learner.name``; the state key
      ``"~etp/<name>"`` holds its traces).
    form: ``"window"`` (the step's VJP plus the entry traces' ``solve``) or
      ``"fused"`` (``fused_solve`` after the roll; window 1 only).
    needs: the :class:`StepNeeds` of every step (an algorithm whose needs
      depend on the compiled step also defines ``needs_for(compiled)``, which
      the driver asks instead: :func:`step_needs`).
    cross_budget: the ``max_cross_bytes`` the compiler plans cross-group
      traces with (0 for none).

  Optional members: ``needs_for(compiled)`` (above); ``roll_window(compiled,
  traces, records, operands)``, the traces after a whole window whose
  records are stacked (``k``-leading), which the driver calls for windows of
  ``k > 1`` steps in place of ``k`` calls of ``roll`` (D-RTRL's closed
  form, ``docs/design.md``); ``window_forms(compiled)``, ``(what, form,
  why)`` per trace for ``report()``; ``fused_solve`` (the fused form).
  """

  @property
  def name(self) -> str:
    """The learner's name."""

  @property
  def form(self) -> str:
    """``"window"`` or ``"fused"``."""

  @property
  def needs(self) -> StepNeeds:
    """What every step must record."""

  @property
  def cross_budget(self) -> Optional[int]:
    """The ``max_cross_bytes`` the compiler plans with."""

  def init(self, compiled: compiler_lib.CompiledStep) -> dict:
    """Zero traces ``{label: array}`` for the compiled step."""

  def operands(self, compiled: compiler_lib.CompiledStep, params: Any) -> Any:
    """What ``solve`` gives gradients for, computed from ``params``
    (differentiably: the driver pulls ``solve`` back through its VJP)."""

  def roll(
      self,
      compiled: compiler_lib.CompiledStep,
      traces: dict,
      record: recording.StepRecord,
      operands: Any,
  ) -> dict:
    """The traces one step later, from the step's record."""

  def solve(
      self,
      compiled: compiler_lib.CompiledStep,
      traces: dict,
      signals: "Signals",
      operands: Any,
  ) -> Any:
    """The trace term at a window's entry, shaped like ``operands``.

    ``signals`` are ``dL/dh`` at the entry: per group ``(*V, S)``, and, in
    the record's order, per hidden leaf (``signals.leaves``).
    """

  def verdicts(
      self, compiled: compiler_lib.CompiledStep
  ) -> tuple[ParameterVerdict, ...]:
    """One :class:`ParameterVerdict` per parameter, in leaf order."""

  def note(self, compiled: compiler_lib.CompiledStep) -> str:
    """Text appended to the approximation warning (``""`` for none)."""

  def check(self, compiled: compiler_lib.CompiledStep, traces: dict) -> None:
    """Raises ``ValueError`` when the traces do not fit (a budget)."""


class AlgorithmBase:
  """The defaults that trace algorithms share; subclass it and override.

  A window-form algorithm (``form = "window"``) that needs each step's
  per-position record (``needs``), plans no cross-group traces
  (``cross_budget = 0``), has nothing to add to the approximation warning
  (``note``) and no budget to check (``check``). A subclass still writes
  ``name``, ``init``, ``operands``, ``roll``, ``solve`` and ``verdicts``.
  """

  @property
  def form(self) -> str:
    return "window"

  @property
  def needs(self) -> StepNeeds:
    return StepNeeds()

  @property
  def cross_budget(self) -> Optional[int]:
    return 0

  def note(self, compiled: compiler_lib.CompiledStep) -> str:
    """Text appended to the approximation warning: none."""
    del compiled
    return ""

  def check(self, compiled: compiler_lib.CompiledStep, traces: Traces) -> None:
    """Nothing bounds the traces."""
    del compiled, traces


class Signals(NamedTuple):
  """The learning signals ``dL/dh`` at a window's entry.

  Attributes:
    groups: per hidden group, ``(*V, S)``.
    leaves: per hidden leaf, in the compiled step's hidden order.
  """

  groups: list
  leaves: list


def step_needs(
    algorithm: TraceAlgorithm, compiled: compiler_lib.CompiledStep
) -> StepNeeds:
  """The :class:`StepNeeds` of ``algorithm`` on ``compiled``: its
  ``needs_for(compiled)`` where it defines one (needs that depend on the
  step), else its ``needs``."""
  needs_for = getattr(algorithm, "needs_for", None)
  return algorithm.needs if needs_for is None else needs_for(compiled)


def check_algorithm(algorithm: TraceAlgorithm) -> None:
  """Raises ``TypeError`` unless ``algorithm`` follows the protocol."""
  if not isinstance(algorithm, TraceAlgorithm):
    missing = [
        m
        for m in (
            "name",
            "form",
            "needs",
            "cross_budget",
            "init",
            "operands",
            "roll",
            "solve",
            "verdicts",
            "note",
            "check",
        )
        if not hasattr(algorithm, m)
    ]
    raise TypeError(
        f"{type(algorithm).__name__} is not a TraceAlgorithm: it lacks "
        f"{missing}. See haiku_etp._src.learners.algorithms.protocol."
    )
  if algorithm.form not in FORMS:
    raise ValueError(
        f"{algorithm.name}: form must be one of {FORMS}, got "
        f"{algorithm.form!r}."
    )
