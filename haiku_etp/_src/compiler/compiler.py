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
"""Reads one Haiku model step: hidden groups, relations, diagnostics.

``compile_step`` runs in phases, each a function that returns data
(``docs/design.md``, "The compiler"):

1. *trace*: the step becomes a flat :class:`~haiku_etp._src.core.program.Program`
   whose inputs are the parameter, state, rng and input leaves;
2. *state use*: hidden state must be both read and written;
3. *relations*: every ETP op, its trainable operands traced back to
   parameters, with a unique, stable key;
4. *flows*: tail, shift and cross masks of the old hidden values and the ETP
   outputs (:func:`~haiku_etp._src.core.program.flow_masks`);
5. *groups*: hidden states linked by tails and of one shape;
6. *attachment*: the groups each relation feeds, and how;
7. *cross-group traces*: the plans that carry credit across groups joined
   by ETP ops (:mod:`~haiku_etp._src.compiler.cross_plan`), within the budget;
8. *diagnostics and parameters*: every cut named with the parameters whose
   D-RTRL gradient it makes approximate, and a status per parameter.
"""

import dataclasses
import enum
import io
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import haiku as hk
import jax
from jax import tree_util
import numpy as np

from haiku_etp._src.compiler import cross_plan as cross_lib
from haiku_etp._src.core import primitive
from haiku_etp._src.core import program as program_lib
from haiku_etp._src.compiler import plain_layers
from haiku_etp._src.core import state as state_lib

Lit = program_lib.Lit


class CompileError(ValueError):
  """A model step that the learners cannot train online."""


class Diagnostic(NamedTuple):
  """A finding of the compiler.

  Attributes:
    level: ``"info"`` or ``"warning"`` (errors raise :class:`CompileError`).
      A warning makes D-RTRL approximate for ``parameters``.
    code: a stable identifier, e.g. ``"cut_memory_path"``.
    message: what was found and what it means for the gradients.
    parameters: paths of the parameters whose D-RTRL gradient it affects.
  """

  level: str
  code: str
  message: str
  parameters: tuple[str, ...] = ()

  def __str__(self) -> str:
    return f"[{self.level}] {self.code}: {self.message}"


class HiddenGroup(NamedTuple):
  """Hidden states that interact per position.

  Attributes:
    name: readable, stable name: the states' module when it holds no other
      group, else their paths joined with ``+``.
    states: paths ``module/name`` of its states, in ``S`` order.
    shape: the position shape ``V`` shared by the states (batch first).
    dtype: their dtype.
  """

  name: str
  states: tuple[str, ...]
  shape: tuple[int, ...]
  dtype: Any

  @property
  def num_states(self) -> int:
    return len(self.states)


class Relation(NamedTuple):
  """One ETP op of the step, ``y = op(x, theta)``.

  Attributes:
    key: unique, stable key: the path of the parameter behind its first
      trainable operand (``linear/w``), with ``#2``, ``#3`` for later uses of
      the same parameter. Trace labels are built from it.
    primitive: the ETP primitive.
    params: the primitive's params as bound in the step.
    node: index of the op in the flat program.
    weights: trainable operand name -> paths of the parameters it comes from.
    x_shape: shape of the op's input (``None`` for input-free ops).
    y_shape: shape of the op's output.
    groups: indices of the groups its output feeds through an aligned tail.
    input_key: key of the first relation reading the same input value
      (ES-D-RTRL keeps one input trace per input value); ``None`` for
      input-free ops.
  """

  key: str
  primitive: primitive.ETPPrimitive
  params: dict
  node: int
  weights: dict
  x_shape: Optional[tuple[int, ...]]
  y_shape: tuple[int, ...]
  groups: tuple[int, ...]
  input_key: Optional[str]


class ParameterRole(str, enum.Enum):
  """How a parameter reaches the step's hidden state; each member is equal to
  its string value (``ParameterRole.TRACED == "traced"``) and prints as it.

  Attributes:
    NON_TEMPORAL: it reaches no hidden state (the in-window gradient is all
      of its gradient).
    TRACED: through ETP relations.
    UNTRACED: it reaches hidden state outside any ETP op.
    FULL: an influence learner (RTRL, SnAp, UORO) keeps its whole influence.
  """

  NON_TEMPORAL = "non-temporal"
  TRACED = "traced"
  UNTRACED = "untraced"
  FULL = "full"

  def __str__(self) -> str:
    return self.value

  def __format__(self, spec: str) -> str:
    return format(self.value, spec)


class ParameterStatus(NamedTuple):
  """How D-RTRL computes one parameter's gradient.

  Attributes:
    path: the parameter's path.
    role: a :class:`ParameterRole`: ``NON_TEMPORAL`` (reaches no hidden
      state: the in-window gradient is all of it), ``TRACED`` (through ETP
      relations) or ``UNTRACED`` (reaches hidden state outside any ETP op).
    exact: whether the compiler proves D-RTRL exact for it.
    reasons: the diagnostic codes that make it approximate.
  """

  path: str
  role: ParameterRole
  exact: bool
  reasons: tuple[str, ...]


@dataclasses.dataclass
class CompiledStep:
  """The structure of one model step, as the learners use it.

  Attributes:
    program: the flat program of ``model.apply(params, state, rng, x)``.
    in_tree: treedef of ``(params, state, rng, x)``.
    out_tree: treedef of ``(out, new_state)``.
    param_paths: paths of the parameter leaves, in leaf order.
    state_paths: ``(module, name)`` of the model state leaves, in leaf order.
    hidden: indices (into the state leaves) of the hidden leaves.
    hidden_group: hidden leaf index -> index of its group.
    groups: the hidden groups.
    relations: the ETP relations.
    parameters: one :class:`ParameterStatus` per parameter, in leaf order.
    diagnostics: everything the compiler found worth saying.
    tangent_nodes: indices of the nodes on tails (recomputed when D and
      ``D_f`` are taken).
    weight_nodes: indices of the nodes that compute the relations' trainable
      operands from the parameters.
    cross: the cross-group trace plans (:class:`~haiku_etp._src.compiler.cross_plan.Plan`).
    cross_inputs: where each hop relation's input is read for the plans.
  """

  program: program_lib.Program
  in_tree: Any
  out_tree: Any
  param_paths: list
  state_paths: list
  hidden: list
  hidden_group: dict
  groups: list
  relations: list
  parameters: list
  diagnostics: list
  tangent_nodes: list
  weight_nodes: list
  cross: tuple = ()
  cross_inputs: dict = dataclasses.field(default_factory=dict)

  @property
  def num_param_leaves(self) -> int:
    return len(self.param_paths)

  @property
  def num_state_leaves(self) -> int:
    return len(self.state_paths)

  @property
  def num_out_leaves(self) -> int:
    return len(self.program.outvars) - self.num_state_leaves

  @property
  def non_temporal(self) -> list:
    """Paths of the parameters that reach no hidden state (readouts)."""
    return [
        p.path for p in self.parameters if p.role == ParameterRole.NON_TEMPORAL
    ]

  @property
  def approximate(self) -> list:
    """The statuses of the parameters whose D-RTRL gradient is approximate."""
    return [p for p in self.parameters if not p.exact]

  @property
  def drtrl_exact(self) -> bool:
    """Whether the compiler proves D-RTRL exact for every parameter."""
    return not self.approximate

  def hidden_in(self, leaf: int) -> int:
    """Program value id of the old value of state leaf ``leaf``."""
    return self.program.invars[self.num_param_leaves + leaf]

  def hidden_out(self, leaf: int) -> program_lib.Atom:
    """Program atom of the new value of state leaf ``leaf``."""
    return self.program.outvars[self.num_out_leaves + leaf]

  def group_leaves(self, g: int) -> list:
    """State leaf indices of group ``g`` in ``S`` order."""
    return [i for i in self.hidden if self.hidden_group[i] == g]

  def report(
      self,
      traces: Optional[dict] = None,
      verdicts: Optional[Any] = None,
      *,
      diagnostics: Optional[Sequence[Diagnostic]] = None,
      drtrl: Optional[str] = None,
  ) -> str:
    """Human-readable summary: groups, relations, parameters, diagnostics.

    Args:
      traces: optional ``{label: array-like}`` of trace leaves to list with
        shapes and bytes (learners pass theirs).
      verdicts: optional per-parameter statements of a learner (``path``,
        ``role``, ``exact``, ``reasons``) in place of D-RTRL's analysis.
      diagnostics: optional diagnostics to list in place of this
        analysis's (a learner leaves out those about a D-RTRL budget it
        does not have).
      drtrl: optional verdict for the closing ``D-RTRL on this step:``
        line in place of this analysis's (a learner that plans no
        cross-group traces gives D-RTRL's own).

    Returns:
      The report text.
    """
    out = io.StringIO()
    p = lambda *a: print(*a, file=out)
    p(f"hidden groups ({len(self.groups)}):")
    for gi, g in enumerate(self.groups):
      p(
          f"  [{gi}] {g.name}: S={g.num_states} shape={g.shape} "
          f"dtype={np.dtype(g.dtype).name} states={list(g.states)}"
      )
    p(f"relations ({len(self.relations)}):")
    for r in self.relations:
      fed = [self.groups[g].name for g in r.groups] or ["(no group)"]
      weights = ", ".join(f"{k}<-{'+'.join(v)}" for k, v in r.weights.items())
      p(
          f"  {r.key}: {r.primitive.name} x={r.x_shape} y={r.y_shape} "
          f"[{weights}] -> {fed}"
      )
    verdicts = self.parameters if verdicts is None else verdicts
    p(f"parameters ({len(verdicts)}):")
    width = max((len(s.path) for s in verdicts), default=0)
    for s in verdicts:
      verdict = "exact" if s.exact else "approximate: " + ", ".join(s.reasons)
      p(f"  {s.path:<{width}}  {s.role:<12}  {verdict}")
    if traces is not None:
      total = 0
      p(f"traces ({len(traces)}):")
      for label, leaf in traces.items():
        nbytes = int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
        total += nbytes
        p(
            f"  {label}: shape={tuple(leaf.shape)} "
            f"dtype={np.dtype(leaf.dtype).name} {format_bytes(nbytes)}"
        )
      p(f"  total: {format_bytes(total)}")
    diagnostics = self.diagnostics if diagnostics is None else diagnostics
    p(f"diagnostics ({len(diagnostics)}):")
    for d in diagnostics:
      p(f"  {d}")
    if drtrl is None:
      drtrl = "exact" if self.drtrl_exact else "approximate (see warnings)"
    p(f"D-RTRL on this step: {drtrl}")
    return out.getvalue()


def format_bytes(n: float) -> str:
  """``n`` bytes with a binary unit, e.g. ``"1.5 KiB"``."""
  if n < 1024:
    return f"{n} B"
  for unit in ("KiB", "MiB", "GiB"):
    n /= 1024
    if n < 1024 or unit == "GiB":
      break
  return f"{n:.1f} {unit}"


def _path(key_path: Sequence[Any]) -> str:
  return "/".join(
      str(getattr(k, "key", getattr(k, "idx", k))) for k in key_path
  )


class _Step(NamedTuple):
  """Phase 1: the traced step and the tables of its input leaves."""

  program: program_lib.Program
  in_tree: Any
  out_tree: Any
  param_paths: list
  state_paths: list
  hidden: list

  @property
  def num_p(self) -> int:
    return len(self.param_paths)

  @property
  def num_s(self) -> int:
    return len(self.state_paths)

  def state_in(self, leaf: int) -> int:
    return self.program.invars[self.num_p + leaf]

  def state_out(self, leaf: int) -> program_lib.Atom:
    return self.program.outvars[len(self.program.outvars) - self.num_s + leaf]

  def path(self, leaf: int) -> str:
    return state_lib.state_path(*self.state_paths[leaf])

  def shape(self, leaf: int) -> tuple:
    return program_lib.shape(self.program.avals[self.state_in(leaf)])

  def written(self, leaf: int) -> bool:
    return self.state_out(leaf) != self.state_in(leaf)


def _trace(
    model: hk.TransformedWithState,
    params: hk.Params,
    state: hk.State,
    rng: Optional[jax.Array],
    x: Any,
) -> _Step:
  params = hk.data_structures.to_mutable_dict(params)
  state = hk.data_structures.to_mutable_dict(state)
  param_leaves, _ = tree_util.tree_flatten_with_path(params)
  param_paths = [_path(p) for p, _ in param_leaves]
  state_paths = [(m, n) for m, n, _ in state_lib.iter_state(state)]
  hidden = [
      i for i, (_, n) in enumerate(state_paths) if state_lib.is_hidden_name(n)
  ]
  if not hidden:
    raise CompileError(
        "The step declares no hidden state. Keep recurrent memory with "
        "haiku_etp.get_hidden_state / set_hidden_state so the learners know "
        "what to trace."
    )
  try:
    traced = program_lib.trace(model.apply, params, state, rng, x)
  except program_lib.UnreadableStep as e:
    raise CompileError(str(e)) from None
  flattener, program = traced.flattener, traced.program
  if flattener.aliased:
    # The stacking that reads saw through is left unused.
    program_lib.drop_dead(program)
  num_p = len(param_paths)
  for leaf in hidden:
    if program.invars[num_p + leaf] in flattener.sliced:
      path = state_lib.state_path(*state_paths[leaf])
      raise CompileError(
          f"Hidden state {path!r} is sliced by a scan: it has a leading "
          "layer axis (hk.layer_stack stacks the state of the layers it "
          "repeats), so it is not batch first. The learners keep such "
          "state per layer ('name@layer0', ...) and compile that: build the "
          "state with learner.init or learner.init_state and compile with "
          "learner.compile, or stack the layers with a Python loop."
      )
  if plain_layers.adopt(program, len(param_paths)):
    plain_layers.split_relations(program)
  plain_layers.bias_relations(program, len(param_paths))
  return _Step(
      program, traced.in_tree, traced.out_tree, param_paths, state_paths, hidden
  )


def _check_state_use(step: _Step) -> None:
  """Phase 2: every hidden state is read and written by the step."""
  program = step.program
  used: set[int] = set()
  for node in program.nodes:
    used.update(a for a in node.ins if not isinstance(a, Lit))
  num_out = len(program.outvars) - step.num_s
  for k, o in enumerate(program.outvars):
    # A state's own output slot holding its old value is no read of it.
    own = k >= num_out and o == step.state_in(k - num_out)
    if not isinstance(o, Lit) and not own:
      used.add(o)
  for leaf in step.hidden:
    read, written = step.state_in(leaf) in used, step.written(leaf)
    if not written:
      raise CompileError(
          f"Hidden state {step.path(leaf)!r} is "
          + ("read but never written" if read else "never used")
          + " by the step, so the model would not be recurrent through it. "
          "Write its new value with set_hidden_state under the same name "
          "(check the spelling), or drop it."
      )
    if not read:
      raise CompileError(
          f"Hidden state {step.path(leaf)!r} is written but never read by "
          "the step: its new value never reaches a later step. Read it with "
          "get_hidden_state under the same name (check the spelling)."
      )


class _RawRelation(NamedTuple):
  key: str
  node: int
  weights: dict
  x_atom: Any
  input_key: Optional[str]


def _find_relations(step: _Step, deps: dict) -> list:
  """Phase 3: ETP ops with their parameters and unique keys."""
  program = step.program
  num_p = step.num_p
  param_mask = (1 << num_p) - 1
  state_mask = ((1 << step.num_s) - 1) << num_p
  dep_of = lambda a: 0 if isinstance(a, Lit) else deps.get(a, 0)
  out: list[_RawRelation] = []
  used: dict[str, int] = {}
  inputs: dict[Any, str] = {}
  for ni, node in enumerate(program.nodes):
    if not node.etp:
      continue
    prim = node.prim
    weights = {}
    for operand, idx in prim.trainable_invars(node.params).items():
      a = node.ins[idx]
      d = dep_of(a)
      src = [step.param_paths[k] for k in program_lib.set_bits(d & param_mask)]
      state_src = [k - num_p for k in program_lib.set_bits(d & state_mask)]
      written = [k for k in state_src if step.written(k)]
      if written:
        raise CompileError(
            f"The {operand!r} operand of {prim.name} comes from state "
            f"{step.path(written[0])!r}, which the step writes: a weight "
            "that changes inside the step cannot be trained online. Use "
            "hk.get_parameter for trainable weights."
        )
      if not src or state_src or d & ~(param_mask | state_mask):
        what = (
            "state"
            if state_src
            else ("the step's input or rng" if d else "a constant")
        )
        raise CompileError(
            f"The {operand!r} operand of {prim.name} (shape "
            f"{program_lib.shape(program.aval(a))}) is not a parameter: it "
            f"comes from {what}. ETP weights must be computed from "
            "hk.get_parameter values only."
        )
      weights[operand] = tuple(src)
    base = next(iter(weights.values()))[0] if weights else prim.name
    used[base] = used.get(base, 0) + 1
    key = base if used[base] == 1 else f"{base}#{used[base]}"
    x_atom = (
        None if prim.x_invar_index is None else node.ins[prim.x_invar_index]
    )
    input_key = None
    if x_atom is not None:
      # Literals are keyed by relation: equal constants are rare and cheap.
      ident = ("lit", key) if isinstance(x_atom, Lit) else x_atom
      input_key = inputs.setdefault(ident, key)
    out.append(_RawRelation(key, ni, weights, x_atom, input_key))
  return out


def _form_groups(step: _Step, tail: dict) -> tuple[list, dict, list]:
  """Phase 5: union-find over hidden leaves linked by tails, one shape each."""
  hidden = step.hidden
  num_h = len(hidden)
  get = lambda a: 0 if isinstance(a, Lit) else tail.get(a, 0)
  parent = list(range(num_h))

  def find(k: int) -> int:
    while parent[k] != k:
      parent[k] = parent[parent[k]]
      k = parent[k]
    return k

  unaligned = []  # (source hidden position, destination hidden position)
  for k, leaf in enumerate(hidden):
    for j in program_lib.set_bits(
        get(step.state_out(leaf)) & ((1 << num_h) - 1)
    ):
      if j == k:
        continue
      if step.shape(hidden[j]) == step.shape(leaf):
        parent[find(j)] = find(k)
      else:
        unaligned.append((j, k))
  roots = []
  for k in range(num_h):
    if find(k) not in roots:
      roots.append(find(k))
  hidden_group = {leaf: roots.index(find(k)) for k, leaf in enumerate(hidden)}
  members = [
      [leaf for leaf in hidden if hidden_group[leaf] == g]
      for g in range(len(roots))
  ]
  module_of = lambda leaf: step.state_paths[leaf][0]
  groups = []
  for g, leaves in enumerate(members):
    modules = {module_of(l) for l in leaves}
    # The bare module name is unambiguous only when the module holds no
    # other group; otherwise the states' paths, which are unique, name it.
    alone = len(modules) == 1 and all(
        module_of(l) not in modules for l in hidden if hidden_group[l] != g
    )
    name = modules.pop() if alone else "+".join(step.path(l) for l in leaves)
    aval = step.program.avals[step.state_in(leaves[0])]
    groups.append(
        HiddenGroup(
            name,
            tuple(step.path(l) for l in leaves),
            step.shape(leaves[0]),
            aval.dtype,
        )
    )
  return groups, hidden_group, unaligned


def _broadcasts(y_shape: Sequence[int], v_shape: Sequence[int]) -> bool:
  """Whether ``y_shape`` broadcasts onto ``v_shape`` (NumPy, trailing)."""
  if len(y_shape) > len(v_shape):
    return False
  tail = v_shape[len(v_shape) - len(y_shape) :]
  return all(a == b or a == 1 for a, b in zip(y_shape, tail))


class _Flows(NamedTuple):
  """Phase 4: masks over the program; hidden bits first, then relations."""

  masks: program_lib.Masks
  deps: dict

  def at(self, which: str, atom: program_lib.Atom) -> int:
    if which == "deps":
      return 0 if isinstance(atom, Lit) else self.deps.get(atom, 0)
    return self.masks.at(which, atom)

  def cut(self, atom: program_lib.Atom) -> int:
    """Sources that reach ``atom`` through any mixing (an ETP op included)."""
    return (
        self.at("cross", atom) | self.at("etp", atom) | self.at("relabel", atom)
    )


def _flows(step: _Step, relations: list) -> _Flows:
  num_h = len(step.hidden)
  nodes = step.program.nodes
  rel_bit = {
      id(nodes[r.node]): 1 << (num_h + i) for i, r in enumerate(relations)
  }
  seeds = {step.state_in(leaf): 1 << k for k, leaf in enumerate(step.hidden)}
  masks = program_lib.flow_masks(step.program, seeds, rel_bit)
  all_seeds = {v: 1 << k for k, v in enumerate(step.program.invars)}
  deps = program_lib.dependencies(step.program, all_seeds)
  return _Flows(masks, deps)


def _attach(
    step: _Step,
    raw: Sequence[_RawRelation],
    groups: Sequence[HiddenGroup],
    hidden_group: Mapping[int, int],
    flows: _Flows,
) -> tuple[list, list]:
  """Phase 6: the groups each relation feeds, and what it cannot feed."""
  num_h = len(step.hidden)
  program = step.program
  relations, findings = [], []
  for r, rr in enumerate(raw):
    node = program.nodes[rr.node]
    y_shape = program_lib.shape(program.avals[node.outs[0]])
    bit = 1 << (num_h + r)
    fed, shifted, crossed = set(), set(), set()
    for leaf in step.hidden:
      g, out = hidden_group[leaf], step.state_out(leaf)
      if flows.at("tail", out) & bit:
        fed.add(g)
      if flows.at("shift", out) & bit:
        shifted.add(g)
      if flows.cut(out) & bit:
        crossed.add(g)
    aligned = []
    for g in sorted(fed):
      v = groups[g].shape
      if y_shape == v or (
          node.prim.x_invar_index is None
          and g not in shifted
          and _broadcasts(y_shape, v)
      ):
        aligned.append(g)
      else:
        findings.append(("unaligned_relation", r, g))
    for g in sorted(crossed):
      findings.append(("relation_through_cut", r, g))
    x_shape = (
        None
        if rr.x_atom is None
        else program_lib.shape(program.aval(rr.x_atom))
    )
    relations.append(
        Relation(
            rr.key,
            node.prim,
            dict(node.params),
            rr.node,
            rr.weights,
            x_shape,
            y_shape,
            tuple(aligned),
            rr.input_key,
        )
    )
  return relations, findings


def _influence(step: _Step, flows: _Flows) -> list:
  """Per state leaf, the parameter mask that reaches it over time."""
  num_p, num_s = step.num_p, step.num_s
  param_mask = (1 << num_p) - 1
  direct = [flows.at("deps", step.state_out(s)) for s in range(num_s)]
  infl = [d & param_mask for d in direct]
  changed = True
  while changed:
    changed = False
    for s in range(num_s):
      new = infl[s]
      for t in program_lib.set_bits(direct[s] >> num_p & ((1 << num_s) - 1)):
        new |= infl[t]
      if new != infl[s]:
        infl[s], changed = new, True
  return infl


def _reach_hidden(step: _Step, flows: _Flows) -> int:
  """Mask of the input leaves some new hidden value depends on."""
  mask = 0
  for leaf in step.hidden:
    mask |= flows.at("deps", step.state_out(leaf))
  return mask


def _uncovered(
    step: _Step,
    relations: Sequence[Relation],
    planned: cross_lib.Planned,
    params: Sequence[str],
    src: int,
    dst: int,
) -> tuple:
  """The ``params`` whose credit from group ``src`` into ``dst`` no
  cross-group trace carries."""
  out = []
  for p in params:
    users = [
        i
        for i, r in enumerate(relations)
        if any(p in ps for ps in r.weights.values())
        and (src in r.groups or src in planned.reach.get(i, ()))
    ]  # pyformat: disable
    if not users or any(dst not in planned.traced(i) for i in users):
      out.append(p)
  return tuple(out)


def _memory_diagnostics(
    step: _Step,
    relations: Sequence[Relation],
    groups: Sequence[HiddenGroup],
    hidden_group: Mapping[int, int],
    unaligned: Sequence[tuple[int, int]],
    flows: _Flows,
    infl: Sequence[int],
    planned: cross_lib.Planned,
) -> list[Diagnostic]:
  """Memory paths D drops: across shapes, or through a cut."""
  hidden, num_h = step.hidden, len(step.hidden)
  names = lambda mask: tuple(
      step.param_paths[k] for k in program_lib.set_bits(mask)
  )
  group_infl = [0] * len(groups)
  for leaf in hidden:
    group_infl[hidden_group[leaf]] |= infl[leaf]
  out = []
  for j, k in unaligned:
    src, dst = hidden[j], hidden[k]
    out.append(
        Diagnostic(
            "warning",
            "unaligned_memory",
            f"{step.path(dst)!r} {step.shape(dst)} depends on "
            f"{step.path(src)!r} {step.shape(src)} through "
            "position-preserving ops but their shapes differ, so they cannot "
            "share a group; D-RTRL drops this dependency across steps.",
            names(infl[src]),
        )
    )
  for leaf in hidden:
    crossing = flows.cut(step.state_out(leaf)) & ((1 << num_h) - 1)
    for j in program_lib.set_bits(crossing):
      a, b = hidden_group[hidden[j]], hidden_group[leaf]
      src, dst = groups[a], groups[b]
      params = _uncovered(step, relations, planned, names(group_infl[a]), a, b)
      text = (
          f"{step.path(leaf)!r} (group {dst.name}) depends on the previous "
          f"{step.path(hidden[j])!r} (group {src.name}) through an ETP or "
          "mixing op; D cuts that path"
      )
      if params:
        out.append(
            Diagnostic(
                "warning",
                "cut_memory_path",
                f"{text}, so the parameters that reach {src.name} get an "
                "approximate D-RTRL gradient.",
                params,
            )
        )
      else:
        out.append(
            Diagnostic(
                "info",
                "cut_memory_path",
                f"{text}; cross-group traces carry it for every parameter "
                f"that reaches {src.name}.",
            )
        )
  return out


def _relation_diagnostics(
    relations: Sequence[Relation],
    groups: Sequence[HiddenGroup],
    findings: Sequence[tuple[str, int, int]],
    planned: cross_lib.Planned,
) -> list:
  """Relations that reach a group other than through an aligned tail."""
  out = []
  for code, r, g in findings:
    rel, group = relations[r], groups[g]
    params = tuple(p for ps in rel.weights.values() for p in ps)
    if code == "relation_through_cut" and g in planned.traced(r):
      out.append(
          Diagnostic(
              "info",
              code,
              f"{rel.key} ({rel.primitive.name}) reaches group {group.name} "
              "through another ETP op; a cross-group trace carries it.",
          )
      )
      continue
    if code == "unaligned_relation":
      msg = (
          f"{rel.key} ({rel.primitive.name}) output {rel.y_shape} reaches "
          f"group {group.name} {group.shape} but does not line up with its "
          "positions (NumPy broadcasting on trailing axes); it gets only the "
          "in-window gradient there."
      )
    else:
      msg = (
          f"{rel.key} ({rel.primitive.name}) reaches group {group.name} "
          "through another ETP or mixing op in the same step; the traces "
          "miss that path, which gets only the in-window gradient."
      )
    out.append(Diagnostic("warning", code, msg, params))
  return out


def _untraced_parameters(
    step: _Step, relations: Sequence[Relation], flows: _Flows
) -> list:
  reach = _reach_hidden(step, flows)
  etp_params = {p for r in relations for ps in r.weights.values() for p in ps}
  return [
      Diagnostic(
          "warning",
          "untraced_parameter",
          f"Parameter {path!r} reaches hidden state outside any ETP op; it "
          "gets only the in-window gradient. Route it through "
          "haiku_etp.dense/conv/elementwise to trace it.",
          (path,),
      )
      for k, path in enumerate(step.param_paths)
      if reach >> k & 1 and path not in etp_params
  ]


def _cross_diagnostics(
    step: _Step,
    relations: Sequence[Relation],
    groups: Sequence[HiddenGroup],
    planned: cross_lib.Planned,
) -> list:
  """What the cross-group traces carry, and what the budget left out."""
  out = []
  for p in planned.plans:
    rel = relations[p.relation]
    names = [groups[g].name for g in p.groups]
    names += [f"{groups[g].name} (filtered)" for g, _ in p.filtered]
    out.append(
        Diagnostic(
            "info",
            "cross_group_trace",
            f"{rel.key} keeps traces into {', '.join(names)}: "
            f"{format_bytes(p.nbytes)}.",
        )
    )
  for r, nbytes in planned.over_budget.items():
    rel = relations[r]
    out.append(
        Diagnostic(
            "warning",
            "cross_trace_over_budget",
            f"{rel.key}'s cross-group traces would make D-RTRL exact but need "
            f"{format_bytes(nbytes)}, over max_cross_bytes; the cut stays. "
            "Raise d_rtrl(..., max_cross_bytes=) to keep them.",
            tuple(q for ps in rel.weights.values() for q in ps),
        )
    )
  return out


def _diagnose(
    step: _Step,
    relations: Sequence[Relation],
    groups: Sequence[HiddenGroup],
    hidden_group: Mapping[int, int],
    unaligned: Sequence[tuple[int, int]],
    findings: Sequence[tuple[str, int, int]],
    flows: _Flows,
    planned: cross_lib.Planned,
) -> list:  # pyformat: disable
  """Phase 7: every finding, with the parameters it makes approximate."""
  infl = _influence(step, flows)
  return (
      _memory_diagnostics(
          step, relations, groups, hidden_group, unaligned, flows, infl, planned
      )  # pyformat: disable
      + _relation_diagnostics(relations, groups, findings, planned)
      + _untraced_parameters(step, relations, flows)
      + _carried_state(step, flows, infl)
      + _cross_diagnostics(step, relations, groups, planned)
  )


def _carried_state(step: _Step, flows: _Flows, infl: list) -> list:
  """Diagnostics for memory kept outside hidden state."""
  out = []
  num_p = step.num_p
  read_by = 0
  for o in step.program.outvars:
    read_by |= flows.at("deps", o)
  for s, (m, n) in enumerate(step.state_paths):
    if state_lib.is_hidden_name(n):
      continue
    path = state_lib.state_path(m, n)
    aval = step.program.avals[step.state_in(s)]
    floating = jax.numpy.issubdtype(aval.dtype, jax.numpy.inexact)
    used_later = (read_by >> (num_p + s)) & 1 and step.written(s)
    if floating and used_later and infl[s]:
      names = tuple(step.param_paths[k] for k in program_lib.set_bits(infl[s]))
      out.append(
          Diagnostic(
              "warning",
              "untraced_memory",
              f"{path!r} is ordinary state that depends on parameters and is "
              "read at the next step: memory the learners do not trace, so "
              "the gradient through it across steps is lost. Declare it with "
              "haiku_etp.get_hidden_state to make it part of the recurrence.",
              names,
          )
      )
    else:
      out.append(
          Diagnostic(
              "info",
              "carried_state",
              f"{path!r} is ordinary state: carried across steps, not "
              "traced"
              + (
                  " (it carries no gradient)."
                  if not floating
                  else " (no parameter reaches it through memory)."
              ),
          )
      )
  return out


def _parameters(
    step: _Step,
    relations: Sequence[Relation],
    diagnostics: Sequence[Diagnostic],
    flows: _Flows,
) -> list:
  reach_hidden = _reach_hidden(step, flows)
  etp_params = {p for r in relations for ps in r.weights.values() for p in ps}
  reasons: dict[str, list[str]] = {p: [] for p in step.param_paths}
  for d in diagnostics:
    if d.level != "warning":
      continue
    for p in d.parameters:
      if d.code not in reasons[p]:
        reasons[p].append(d.code)
  out = []
  for k, path in enumerate(step.param_paths):
    if not reach_hidden >> k & 1:
      role = ParameterRole.NON_TEMPORAL
    elif path in etp_params:
      role = ParameterRole.TRACED
    else:
      role = ParameterRole.UNTRACED
    out.append(
        ParameterStatus(path, role, not reasons[path], tuple(reasons[path]))
    )
  return out


DEFAULT_CROSS_BYTES = 512 * 2**20


def check_byte_budget(value: Any, name: str, zero: str = "") -> None:
  """Raises ``ValueError`` unless the budget ``value`` (argument ``name``)
  is ``None`` or an int ``>= 0``; ``zero`` says what 0 means."""
  if value is None:
    return
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    bad = True
  else:
    bad = bool(value < 0)
  if bad:
    raise ValueError(
        f"{name} must be None (no limit) or an int >= 0{zero}, got {value!r}."
    )


def check_cross_budget(max_cross_bytes: Optional[int]) -> None:
  """Raises ``ValueError`` unless ``max_cross_bytes`` is ``None`` or an int
  ``>= 0``."""
  check_byte_budget(
      max_cross_bytes, "max_cross_bytes", " (0 keeps no cross-group trace)"
  )


def compile_step(
    model: hk.TransformedWithState,
    params: hk.Params,
    state: hk.State,
    rng: Any,
    x: Any,
    *,
    max_cross_bytes: Optional[int] = DEFAULT_CROSS_BYTES,
) -> CompiledStep:
  """Analyses one step ``model.apply(params, state, rng, x)``.

  Only shapes and dtypes of the example arguments matter.

  Args:
    model: the ``hk.transform_with_state`` step.
    params: example parameters.
    state: example model state (without learner entries).
    rng: example rng (or ``None``).
    x: example input of one step.
    max_cross_bytes: the largest total size of the cross-group traces that
      carry credit across hidden groups (``None``: no limit; 0: none, the
      paths stay cut). Plans are kept smallest first.

  Returns:
    A :class:`CompiledStep`.

  Raises:
    ValueError: for a negative or non-integer ``max_cross_bytes``.
    CompileError: if the step has no hidden state; a hidden state is read but
      never written, or written but never read; an ETP weight is not a
      parameter; an ETP op sits inside a ``while_loop`` without a static
      trip count or a custom-derivative function (``cond``, ``switch`` and
      ``scan`` are fine); or a hidden state is sliced by a scan (a layer
      stack's own state: the learners keep it per layer).
  """
  if not isinstance(model, hk.TransformedWithState):
    raise CompileError(
        "Expected an hk.TransformedWithState (hk.transform_with_state), got "
        f"{type(model).__name__}."
    )
  check_cross_budget(max_cross_bytes)
  step = _trace(model, params, state, rng, x)
  _check_state_use(step)
  deps = program_lib.dependencies(
      step.program, {v: 1 << k for k, v in enumerate(step.program.invars)}
  )
  raw = _find_relations(step, deps)
  flows = _flows(step, raw)
  groups, hidden_group, unaligned = _form_groups(step, flows.masks.tail)
  relations, findings = _attach(step, raw, groups, hidden_group, flows)
  planned = cross_lib.plan(
      step, relations, groups, hidden_group, flows, findings, max_cross_bytes
  )
  diagnostics = _diagnose(
      step,
      relations,
      groups,
      hidden_group,
      unaligned,
      findings,
      flows,
      planned,
  )  # pyformat: disable
  program = step.program
  tangent_nodes = [
      ni
      for ni, node in enumerate(program.nodes)
      if not node.etp
      and any(
          flows.at("tail", a) and program_lib.row_keeps(row)
          for a, row in zip(node.ins, node.flows)
      )
  ]
  weight_atoms = [
      program.nodes[r.node].ins[i]
      for r in relations
      for i in r.primitive.trainable_invars(r.params).values()
  ]
  return CompiledStep(
      program=program,
      in_tree=step.in_tree,
      out_tree=step.out_tree,
      param_paths=step.param_paths,
      state_paths=step.state_paths,
      hidden=step.hidden,
      hidden_group=hidden_group,
      groups=groups,
      relations=relations,
      parameters=_parameters(step, relations, diagnostics, flows),
      diagnostics=diagnostics,
      tangent_nodes=tangent_nodes,
      weight_nodes=sorted(program_lib.backward_slice(program, weight_atoms)),
      cross=planned.plans,
      cross_inputs=planned.inputs,
  )
