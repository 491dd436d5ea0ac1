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
r"""Cross-group traces: exact D-RTRL credit across hidden groups.

A relation :math:`r` feeds its own group :math:`A` through a tail; its
per-parameter trace :math:`\epsilon_{r\to A}` describes :math:`A`. When
:math:`A`'s state reaches another group :math:`G` through an ETP op
:math:`r_2` (spikes into a leaky readout, a second layer), :math:`G` depends
on :math:`\theta_r` too, and D-RTRL without more traces cuts that path. This
module plans and rolls the missing traces (``docs/design.md``, "Cross-group
traces"):

.. math::
  E_{r\to G}^t = D_G^t E_{r\to G}^{t-1} + \sum_{r_2 \to G} D_{f,G}^{t}
    \odot \mathrm{op}_{2,x}\bigl(X_{r, r_2}^t\bigr),

where :math:`X_{r,r_2}^t = \partial x_2^t / \partial\theta_r` is built from
the per-position derivatives of :math:`r_2`'s input with respect to the old
states and relation outputs it is a tail of. It is exact for any
feed-forward chain of groups whose cross-position mixing happens in ETP ops
(the compiler checks: no other mixing on the way, no cycle). A downstream
group that is a sink, with one constant scalar leak and a constant tail (a
:class:`~haiku_etp.LeakyReadout` with a fixed time constant), keeps only the
filtered input-side trace :math:`\bar e^t = \kappa \bar e^{t-1} +
X_{r,r_2}^t`, contracted with the readout at the solve.
"""

from typing import (
    Any,
    Iterable,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
)

import numpy as np

from haiku_etp._src.core import program as program_lib

# The compiler's tables (its step, Relation, HiddenGroup and flows) reach the
# planner as they are; the compiler imports this module, so they are typed
# here by these names only.
_Step = Any
_Relation = Any
_HiddenGroup = Any
_Flows = Any

Lit = program_lib.Lit


class Hop(NamedTuple):
  """One downstream relation on a source relation's paths.

  Attributes:
    relation: the downstream relation ``r2`` (its index).
    own_groups: the source's own groups whose old state ``r2``'s input is a
      tail of.
    own_output: whether ``r2``'s input is a tail of the source's output in
      the same step.
    groups: downstream groups whose old state ``r2``'s input is a tail of.
    relations: downstream relations whose output ``r2``'s input is a tail
      of, in the same step.
    fed: the groups ``r2`` feeds.
  """

  relation: int
  own_groups: tuple
  own_output: bool
  groups: tuple
  relations: tuple
  fed: tuple


class Plan(NamedTuple):
  """The cross-group traces of one source relation.

  Attributes:
    relation: the source relation.
    hops: the downstream relations, in program order.
    groups: downstream groups kept as full fields ``(B, *param, *V, S)``.
    filtered: ``(group, hop relation)`` pairs kept as filtered input-side
      traces (a sink with a constant scalar leak).
    nbytes: bytes of all its fields.
  """

  relation: int
  hops: tuple
  groups: tuple
  filtered: tuple
  nbytes: int


class CrossInput(NamedTuple):
  """Where a hop relation's input is read for its per-position derivative.

  Attributes:
    pre: the value the op's input is a fixed linear function of, through a
      chain of parameter-free ops (a flatten, a mean over positions); the
      input itself when there is no chain.
    chain: ``(node index, carrier operand)`` of that chain, from ``pre`` to
      the op's input.
    const_nodes: indices of the nodes that compute the chain's constant
      operands (from literals only).
    sources: bits of the old hidden states and relation outputs that
      ``pre`` is a tail of.
  """

  pre: Any
  chain: tuple
  const_nodes: tuple
  sources: int


_LINEAR = frozenset(
    {
        "add",
        "sub",
        "neg",
        "convert_element_type",
        "copy",
        "copy_p",
        "broadcast_in_dim",
        "reshape",
        "squeeze",
        "expand_dims",
    }
)  # pyformat: disable


def _walk_back(
    program: program_lib.Program,
    producer: Mapping[int, int],
    deps: Mapping[int, int],
    atom: program_lib.Atom,
) -> tuple:
  """``(pre, chain, constant atoms)`` behind a relation's input."""
  chain, constants = [], []
  while not isinstance(atom, Lit) and atom in producer:
    ni = producer[atom]
    node = program.nodes[ni]
    if node.prim.name not in program_lib.LINEAR_IN_ONE:
      break
    carried = [
        k
        for k, a in enumerate(node.ins)
        if not isinstance(a, Lit) and deps.get(a, 0)
    ]  # pyformat: disable
    if len(carried) != 1 or (node.prim.name == "div" and carried != [0]):
      break
    (k,) = carried
    chain.append((ni, k))
    constants += [a for j, a in enumerate(node.ins) if j != k]
    atom = node.ins[k]
  return atom, tuple(reversed(chain)), constants


class _Graph(NamedTuple):
  """What the planner reads from the compiler."""

  step: _Step
  relations: Sequence[_Relation]
  groups: Sequence[_HiddenGroup]
  hidden_group: Mapping[int, int]
  flows: _Flows
  findings: Sequence[tuple[str, int, int]]
  group_bits: list[int]
  # relation index -> CrossInput (relations with an input)
  inputs: dict[int, "CrossInput"]
  # relation index -> bits reaching its input other than by tails
  bad: dict[int, int]

  @property
  def num_h(self) -> int:
    return len(self.step.hidden)

  def rel_bit(self, i: int) -> int:
    return 1 << (self.num_h + i)

  def source_shape(self, bit: int) -> tuple[int, ...]:
    if bit < self.num_h:
      return self.step.shape(self.step.hidden[bit])
    return tuple(self.relations[bit - self.num_h].y_shape)


def _graph(
    step: _Step,
    relations: Sequence[_Relation],
    groups: Sequence[_HiddenGroup],
    hidden_group: Mapping[int, int],
    flows: _Flows,
    findings: Sequence[tuple[str, int, int]],
) -> _Graph:
  program = step.program
  producer = program_lib.producers(program)
  group_bits = [0] * len(groups)
  for k, leaf in enumerate(step.hidden):
    group_bits[hidden_group[leaf]] |= 1 << k
  walks = {}
  for i, rel in enumerate(relations):
    xi = rel.primitive.x_invar_index
    if xi is not None:
      x = program.nodes[rel.node].ins[xi]
      walks[i] = _walk_back(program, producer, flows.deps, x)
  # The op and its input's chain are one linear map: propagate the masks
  # with each op reading its chain's start.
  num_h = len(step.hidden)
  nodes = program.nodes
  masks = program_lib.flow_masks(
      program,
      {step.state_in(leaf): 1 << k for k, leaf in enumerate(step.hidden)},
      {id(nodes[r.node]): 1 << (num_h + i) for i, r in enumerate(relations)},
      {id(nodes[relations[i].node]): w[0] for i, w in walks.items()},
  )
  # The compiler's flows, with each relation's input read at its chain's
  # start.
  chain_flows = flows._replace(masks=masks)
  inputs, bad = {}, {}
  for i, (pre, chain, constants) in walks.items():
    const_atoms = [a for a in constants if not isinstance(a, Lit)]
    const_nodes = program_lib.backward_slice(program, const_atoms)
    sources = chain_flows.at("tail", pre)
    inputs[i] = CrossInput(pre, chain, tuple(sorted(const_nodes)), sources)
    # One-ETP-or-more paths into the input are the hops before this one;
    # anything else cannot be followed position by position.
    bad[i] = (
        chain_flows.at("cross", pre)
        | chain_flows.at("shift", pre)
        | chain_flows.at("relabel", pre)
    )
    if any(flows.at("deps", a) for a in const_atoms):
      bad[i] |= sources  # a chain operand that is not a constant
  return _Graph(
      step,
      relations,
      groups,
      hidden_group,
      chain_flows,
      findings,
      group_bits,
      inputs,
      bad,
  )  # pyformat: disable


def _reach(g: _Graph, i: int) -> tuple[list, set, int]:
  """Downstream relations (program order), groups and source bits of ``i``."""
  rel = g.relations[i]
  own_bits = g.rel_bit(i)
  for grp in rel.groups:
    own_bits |= g.group_bits[grp]
  bits = own_bits
  down, groups = [], set()
  changed = True
  while changed:
    changed = False
    for j in sorted(g.inputs):
      if j == i or j in down:
        continue
      reads = g.inputs[j].sources | g.bad[j]
      if _within(g, rel, j, reads, own_bits):
        continue  # Mixing inside the source's own groups stays cut.
      if reads & bits:
        down.append(j)
        bits |= g.rel_bit(j)
        for grp in g.relations[j].groups:
          groups.add(grp)
          bits |= g.group_bits[grp]
        changed = True
  return sorted(down), groups, bits


def _within(
    g: _Graph, rel: _Relation, j: int, reads: int, own_bits: int
) -> bool:
  """Whether relation ``j`` mixes only the source's own groups and output
  back into them (a recurrent weight): D-RTRL cuts that path, and the
  cross-group traces build on the cut per-group trace (e-prop's eligibility
  trace, made exact for the groups downstream)."""
  fed = set(g.relations[j].groups)
  return bool(fed) and fed <= set(rel.groups) and not reads & ~own_bits


def _acyclic(g: _Graph, nodes: set, down: list) -> bool:
  edges: dict[int, set[int]] = {n: set() for n in nodes}
  for j in down:
    for src in nodes:
      if g.inputs[j].sources & g.group_bits[src]:
        edges[src].update(g.relations[j].groups)
  state = {}

  def visit(n: int) -> bool:
    state[n] = 1
    for m in edges.get(n, ()):
      if state.get(m) == 1 or (m not in state and not visit(m)):
        return False
    state[n] = 2
    return True

  return all(state.get(n) == 2 or visit(n) for n in nodes)


def _valid(g: _Graph, i: int, down: list, groups: set, bits: int) -> bool:
  """Whether cross traces make the source ``i`` exact."""
  own = set(g.relations[i].groups)
  if not groups or own & groups:
    return False
  own_bits = g.rel_bit(i)
  for grp in own:
    own_bits |= g.group_bits[grp]
  if i in g.inputs and (g.inputs[i].sources | g.bad[i]) & bits & ~own_bits:
    return False  # The source's input depends on its downstream effects.
  for j in down:
    sources = g.inputs[j].sources & bits
    if g.bad[j] & bits:
      return False
    pre_shape = program_lib.shape(g.step.program.aval(g.inputs[j].pre))
    if any(
        not _lines_up(g, b, pre_shape) for b in program_lib.set_bits(sources)
    ):
      return False
  for code, r, grp in g.findings:
    if r != i and r not in down:
      continue
    if code != "relation_through_cut" or grp not in groups:
      return False
  for leaf in g.step.hidden:
    out = g.step.state_out(leaf)
    if (g.flows.at("cross", out) | g.flows.at("relabel", out)) & bits:
      return False
  return _acyclic(g, own | groups, down)


def _lines_up(g: _Graph, bit: int, pre_shape: Sequence[int]) -> bool:
  """Whether source ``bit`` has the hop input's positions: a hidden state of
  its shape, or a relation output of its shape or broadcast into it on the
  trailing axes (an unbatched per-unit parameter such as a decay)."""
  shape = tuple(g.source_shape(bit))
  if shape == tuple(pre_shape):
    return True
  if bit < g.num_h or not shape or len(shape) >= len(pre_shape):
    return False
  return tuple(pre_shape[len(pre_shape) - len(shape) :]) == shape


def _hop(g: _Graph, i: int, j: int, groups: set, down: list) -> Hop:
  sources = g.inputs[j].sources
  own = tuple(
      grp for grp in g.relations[i].groups if sources & g.group_bits[grp]
  )  # pyformat: disable
  return Hop(
      relation=j,
      own_groups=own,
      own_output=bool(sources & g.rel_bit(i)),
      groups=tuple(
          sorted(grp for grp in groups if sources & g.group_bits[grp])
      ),  # pyformat: disable
      relations=tuple(r for r in down if r != j and sources & g.rel_bit(r)),
      fed=tuple(g.relations[j].groups),
  )


def _constant_path(
    g: _Graph, src_bit: int, dst_atoms: Sequence[program_lib.Atom], scalar: bool
) -> bool:
  """Whether every op from source ``src_bit`` to ``dst_atoms`` is linear with
  constant coefficients (scalar ones if ``scalar``)."""
  program, flows = g.step.program, g.flows
  needed = program_lib.backward_slice(program, dst_atoms)
  for ni in needed:
    node = program.nodes[ni]
    carriers = [a for a in node.ins if flows.at("tail", a) & src_bit]
    if not carriers:
      continue
    name = node.prim.name
    others = [a for a in node.ins if a not in carriers]
    if name in _LINEAR:
      continue
    if name in ("mul", "div") and len(carriers) == 1:
      if name == "div" and node.ins[0] != carriers[0]:
        return False
      if all(_constant(g, a, scalar) for a in others):
        continue
    return False
  return True


def _constant(g: _Graph, atom: program_lib.Atom, scalar: bool) -> bool:
  if isinstance(atom, Lit):
    val = np.asarray(atom.val)
    return not scalar or val.size <= 1 or bool(np.all(val == val.flat[0]))
  if g.flows.at("deps", atom):
    return False
  return not scalar or g.step.program.aval(atom).ndim == 0


def _filterable(g: _Graph, grp: int, hop: Hop, down: list) -> bool:
  """A sink group with a constant scalar leak, fed by ``hop`` alone."""
  group = g.groups[grp]
  if group.num_states != 1 or hop.groups or hop.relations:
    return False
  if any(g.inputs[j].sources & g.group_bits[grp] for j in down):
    return False
  feeders = [j for j in down if grp in g.relations[j].groups]
  if feeders != [hop.relation]:
    return False
  outs = [
      g.step.state_out(leaf)
      for leaf in g.step.hidden
      if g.hidden_group[leaf] == grp
  ]  # pyformat: disable
  if not _constant_path(g, g.group_bits[grp], outs, scalar=True):
    return False
  return _constant_path(g, g.rel_bit(hop.relation), outs, scalar=False)


def _nbytes(
    g: _Graph,
    i: int,
    groups: Iterable[int],
    filtered: Sequence[tuple[int, int]],
) -> int:
  """Bytes of the full fields and the filtered traces of source ``i``."""
  rel = g.relations[i]
  program = g.step.program
  node = program.nodes[rel.node]
  itemsize = np.dtype(
      g.groups[(rel.groups or sorted(groups))[0]].dtype
  ).itemsize
  params = sum(
      int(np.prod(program_lib.shape(program.aval(node.ins[k]))))
      for k in rel.primitive.trainable_invars(rel.params).values()
  )
  total = 0
  for grp in groups:
    shape = g.groups[grp].shape
    total += params * int(np.prod(shape)) * g.groups[grp].num_states
  for grp, j in filtered:
    own = g.groups[rel.groups[0]]  # filtered sinks need an own group
    # The filtered trace has the layout of the source's own trace with one
    # state, over the hop input's positions (the source's positions).
    pre = program_lib.shape(program.aval(g.inputs[j].pre))
    per_state = rel_trace_elements(g, i) // own.num_states
    total += per_state * int(np.prod(pre)) // int(np.prod(own.shape))
    total += int(np.prod(g.groups[grp].shape)) * g.groups[grp].num_states
  return total * itemsize


def rel_trace_elements(g: _Graph, i: int) -> int:
  """Elements of source ``i``'s trace into its first own group."""
  import jax  # pylint: disable=g-import-not-at-top

  from haiku_etp._src.core import primitive  # pylint: disable=g-import-not-at-top

  rel = g.relations[i]
  program = g.step.program
  node = program.nodes[rel.node]
  group = g.groups[rel.groups[0]]
  xi = rel.primitive.x_invar_index
  x_aval = None if xi is None else program.aval(node.ins[xi])
  y = program.aval(node.outs[0])
  y_aval = jax.ShapeDtypeStruct(
      group.shape if xi is None else tuple(y.shape), y.dtype
  )
  weights = {
      k: program.aval(node.ins[j])
      for k, j in rel.primitive.trainable_invars(rel.params).items()
  }
  trace = jax.eval_shape(
      lambda: primitive.drtrl_init(
          rel.primitive, x_aval, y_aval, weights, group.num_states, rel.params
      )
  )
  return sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(trace))


def plan(
    step: _Step,
    relations: Sequence[_Relation],
    groups: Sequence[_HiddenGroup],
    hidden_group: Mapping[int, int],
    flows: _Flows,
    findings: Sequence[tuple[str, int, int]],
    budget: Optional[int],
) -> "Planned":
  """Phase 8: the cross-group traces, within ``budget`` bytes.

  Args:
    step: the traced step.
    relations: the relations.
    groups: the hidden groups.
    hidden_group: hidden leaf -> group.
    flows: the masks.
    findings: ``(code, relation, group)`` from the attachment phase.
    budget: the largest total bytes of cross traces; ``None`` for no limit,
      0 for none.

  Returns:
    A :class:`Planned`.
  """
  g = _graph(step, relations, groups, hidden_group, flows, findings)
  candidates, reach = [], {}
  for i in range(len(relations)):
    down, reached, bits = _reach(g, i)
    reach[i] = reached
    if not _valid(g, i, down, reached, bits):
      continue
    if relations[i].groups and relations[i].primitive.own_trace_layout(
        relations[i].params
    ):
      # Its own trace has a layout the hops' generic rules do not read.
      continue
    hops = tuple(_hop(g, i, j, reached, down) for j in down)
    filtered = tuple(
        (grp, hop.relation)
        for hop in hops
        for grp in hop.fed
        if relations[i].groups and _filterable(g, grp, hop, down)
    )
    full = tuple(sorted(reached - {grp for grp, _ in filtered}))
    nbytes = _nbytes(g, i, full, filtered)
    candidates.append(Plan(i, hops, full, filtered, nbytes))
  kept, over, used = [], {}, 0
  for p in sorted(candidates, key=lambda p: p.nbytes):
    if budget is not None and used + p.nbytes > budget:
      over[p.relation] = p.nbytes
      continue
    kept.append(p)
    used += p.nbytes
  kept.sort(key=lambda p: p.relation)
  hop_rels = {h.relation for p in kept for h in p.hops}
  return Planned(
      tuple(kept), {j: g.inputs[j] for j in sorted(hop_rels)}, over, reach
  )


class Planned(NamedTuple):
  """The planner's answer.

  Attributes:
    plans: the kept :class:`Plan` s, by source relation.
    inputs: the :class:`CrossInput` of every hop relation.
    over_budget: ``{relation: bytes}`` of the plans dropped for the budget.
    reach: ``{relation: groups}`` each relation's credit reaches through
      ETP ops (kept or not).
  """

  plans: tuple
  inputs: dict
  over_budget: dict
  reach: dict

  def traced(self, relation: int) -> set:
    """Groups whose credit from ``relation`` a kept plan traces."""
    for p in self.plans:
      if p.relation == relation:
        return set(p.groups) | {grp for grp, _ in p.filtered}
    return set()
