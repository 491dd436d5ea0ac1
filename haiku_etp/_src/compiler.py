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
"""Reads one Haiku model step as a jaxpr: hidden groups, relations, diagnostics.

The step is traced once on example inputs, nested ``jit`` (and
``checkpoint``/``closed_call``) is inlined into one flat program, and three
forward passes over it answer every structural question the learners ask:

* *dependencies*: which inputs (parameter, state, rng and input leaves) each
  value depends on, through every op;
* *tails*: which old hidden values and which ETP outputs reach each value
  through position-preserving ops only; ETP ops and other mixing ops
  (``dot_general``, reductions, reshapes, ...) cut these paths;
* *crossings*: which old hidden values and ETP outputs reach a value through
  at least one cut op, the paths D-RTRL leaves to the in-window gradient.

Hidden states whose new values depend on each other's old values through
tails, and share one shape, form a *group*. Every ETP op is a *relation*; its
trainable operands are traced back to parameter leaves, and its output's tail
reach gives the groups it feeds.
"""

import dataclasses
import io
from typing import Any, NamedTuple, Optional, Sequence

import haiku as hk
import jax
from jax import tree_util
import jax.extend as jex
import numpy as np

from haiku_etp._src import primitive
from haiku_etp._src import state as state_lib


class CompileError(ValueError):
  """A model step that the learners cannot train online."""


class Diagnostic(NamedTuple):
  """A finding of the compiler.

  Attributes:
    level: ``"info"`` or ``"warning"`` (errors raise :class:`CompileError`).
    code: a stable identifier, e.g. ``"cut_memory_path"``.
    message: what was found and what it means for the gradients.
  """

  level: str
  code: str
  message: str

  def __str__(self):
    return f"[{self.level}] {self.code}: {self.message}"


class HiddenGroup(NamedTuple):
  """Hidden states that interact per position.

  Attributes:
    name: readable, deterministic name (the states' common module, or their
      paths joined with ``+``).
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
    name: readable key, the path of the parameter behind its first trainable
      operand (``linear/w``), made unique with ``#2``, ``#3``.
    primitive: the ETP primitive.
    params: the primitive's params as bound in the step.
    node: index of the op in the flat program.
    weights: trainable operand name -> paths of the parameters it comes from.
    x_shape: shape of the op's input (``None`` for input-free ops).
    y_shape: shape of the op's output.
    groups: indices of the groups its output reaches through a tail.
  """

  name: str
  primitive: primitive.ETPPrimitive
  params: dict
  node: int
  weights: dict
  x_shape: Optional[tuple[int, ...]]
  y_shape: tuple[int, ...]
  groups: tuple[int, ...]


# Ops whose outputs mix positions; paths through them are cut when the
# compiler forms tails and when D and D_f are taken.
_MIXING = frozenset(
    {
        "dot_general",
        "conv_general_dilated",
        "reduce_sum",
        "reduce_max",
        "reduce_min",
        "reduce_prod",
        "reduce_and",
        "reduce_or",
        "reduce_xor",
        "reduce_precision_sum",
        "argmax",
        "argmin",
        "cumsum",
        "cumprod",
        "cummax",
        "cummin",
        "cumlogsumexp",
        "sort",
        "transpose",
        "rev",
        "gather",
        "scatter",
        "scatter-add",
        "scatter_add",
        "scatter-mul",
        "scatter_mul",
        "dynamic_slice",
        "dynamic_update_slice",
        "slice",
        "concatenate",
        "pad",
        "fft",
        "reduce_window_sum",
        "reduce_window_max",
        "reduce_window_min",
        "reduce_window",
        "select_and_scatter_add",
        "select_and_gather_add",
        "top_k",
        "psum",
        "pmax",
        "pmin",
        "all_gather",
        "all_to_all",
        "ppermute",
    }
)
_INLINE = frozenset(
    {"pjit", "jit", "closed_call", "core_call", "remat", "remat2", "checkpoint"}
)
_OPAQUE_ELEMENTWISE = frozenset(
    {"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"}
)


@dataclasses.dataclass(frozen=True)
class Lit:
  """A literal or closed-over constant in the flat program."""

  val: Any


@dataclasses.dataclass
class Node:
  """One op of the flat program; operands are value ids or :class:`Lit`."""

  prim: Any
  params: dict
  ins: tuple
  outs: tuple[int, ...]
  etp: bool
  mixing: bool


def _atom_aval(avals, atom):
  return jax.typeof(atom.val) if isinstance(atom, Lit) else avals[atom]


@dataclasses.dataclass
class Program:
  """A step flattened to ops over integer value ids."""

  nodes: list
  avals: dict
  invars: list
  outvars: list

  def aval(self, atom):
    """Abstract value of a value id or literal."""
    return _atom_aval(self.avals, atom)


def _sub_jaxprs(params):
  for v in params.values():
    items = v if isinstance(v, (tuple, list)) else (v,)
    for item in items:
      if isinstance(item, jex.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jex.core.Jaxpr):
        yield item


def _find_etp(jaxpr) -> Optional[str]:
  for eqn in jaxpr.eqns:
    if primitive.is_etp_primitive(eqn.primitive):
      return eqn.primitive.name
    for sub in _sub_jaxprs(eqn.params):
      found = _find_etp(sub)
      if found:
        return found
  return None


def _inline_jaxpr(params):
  for key in ("jaxpr", "call_jaxpr"):
    inner = params.get(key)
    if isinstance(inner, jex.core.ClosedJaxpr):
      return inner.jaxpr, list(inner.consts)
    if isinstance(inner, jex.core.Jaxpr):
      return inner, []
  return None


def _shape(aval):
  return tuple(getattr(aval, "shape", ()))


def _non_unit(shape):
  return tuple(d for d in shape if d != 1)


def _broadcast_compatible(in_shape, out_shape) -> bool:
  return len(in_shape) == len(out_shape) and all(
      a in (b, 1) for a, b in zip(in_shape, out_shape)
  )


def _is_mixing(prim, ins_avals, out_avals, params) -> bool:
  """Whether an op can move values between positions."""
  name = prim.name
  if name in _MIXING:
    return True
  if name == "broadcast_in_dim":
    return False
  if name in ("reshape", "squeeze", "expand_dims"):
    # Adding or dropping unit axes keeps every position where it is.
    return _non_unit(_shape(ins_avals[0])) != _non_unit(_shape(out_avals[0]))
  if name not in _OPAQUE_ELEMENTWISE and any(True for _ in _sub_jaxprs(params)):
    return True
  in_shapes = [s for s in map(_shape, ins_avals) if s]
  return any(
      not _broadcast_compatible(s, _shape(o))
      for o in out_avals
      for s in in_shapes
  )


class _Flattener:

  def __init__(self):
    self.nodes = []
    self.avals = {}
    self._next = 0

  def new(self, aval) -> int:
    i = self._next
    self._next += 1
    self.avals[i] = aval
    return i

  def aval(self, atom):
    return _atom_aval(self.avals, atom)

  def run(self, jaxpr, consts, ins) -> list:
    env = {}
    for v, c in zip(jaxpr.constvars, consts):
      env[v] = Lit(c)
    for v, a in zip(jaxpr.invars, ins):
      env[v] = a

    def read(v):
      if isinstance(v, jex.core.Literal):
        return Lit(v.val)
      return env[v]

    for eqn in jaxpr.eqns:
      args = [read(v) for v in eqn.invars]
      inline = (
          _inline_jaxpr(eqn.params) if eqn.primitive.name in _INLINE else None
      )
      if inline is not None:
        outs = self.run(inline[0], inline[1], args)
        for v, o in zip(eqn.outvars, outs):
          env[v] = o
        continue
      is_etp = primitive.is_etp_primitive(eqn.primitive)
      if not is_etp:
        for sub in _sub_jaxprs(eqn.params):
          found = _find_etp(sub)
          if found:
            raise CompileError(
                f"The ETP op {found!r} sits inside {eqn.primitive.name!r}. "
                "ETP ops inside scan, cond, while_loop or custom derivative "
                "functions are not supported; call them at the top level of "
                "the step (jit is fine)."
            )
      outs = tuple(self.new(v.aval) for v in eqn.outvars)
      mixing = (not is_etp) and _is_mixing(
          eqn.primitive,
          [self.aval(a) for a in args],
          [v.aval for v in eqn.outvars],
          eqn.params,
      )
      self.nodes.append(
          Node(
              eqn.primitive, dict(eqn.params), tuple(args), outs, is_etp, mixing
          )
      )
      for v, o in zip(eqn.outvars, outs):
        env[v] = o
    return [read(v) for v in jaxpr.outvars]


def _path(key_path) -> str:
  parts = []
  for k in key_path:
    parts.append(str(getattr(k, "key", getattr(k, "idx", k))))
  return "/".join(parts)


def _fmt_bytes(n: int) -> str:
  if n < 1024:
    return f"{n} B"
  for unit in ("KiB", "MiB", "GiB"):
    n /= 1024
    if n < 1024 or unit == "GiB":
      break
  return f"{n:.1f} {unit}"


@dataclasses.dataclass
class CompiledStep:
  """The structure of one model step, as the learners use it.

  Attributes:
    program: the flat program of ``model.apply(params, state, rng, x)``.
    in_tree: treedef of ``(params, state, rng, x)``.
    out_tree: treedef of ``(out, new_state)``.
    num_param_leaves: number of parameter leaves (the first program inputs).
    num_state_leaves: number of model state leaves (the next inputs).
    param_paths: paths of the parameter leaves, in leaf order.
    state_paths: ``(module, name)`` of the model state leaves, in leaf order.
    hidden: indices (into the state leaves) of the hidden leaves.
    hidden_group: hidden leaf index -> index of its group.
    groups: the hidden groups.
    relations: the ETP relations.
    non_temporal: paths of parameters that reach no hidden state (readouts);
      the in-window gradient is exact for them.
    diagnostics: everything the compiler found worth saying.
    tangent_nodes: indices of the nodes on tails (recomputed when D and
      ``D_f`` are taken).
    weight_nodes: indices of the nodes that compute the relations' trainable
      operands from the parameters.
  """

  program: Program
  in_tree: Any
  out_tree: Any
  num_param_leaves: int
  num_state_leaves: int
  param_paths: list
  state_paths: list
  hidden: list
  hidden_group: dict
  groups: list
  relations: list
  non_temporal: list
  diagnostics: list
  tangent_nodes: list
  weight_nodes: list

  @property
  def drtrl_exact(self) -> bool:
    """Whether the compiler found nothing that makes D-RTRL approximate."""
    return not any(d.level == "warning" for d in self.diagnostics)

  def hidden_in(self, leaf: int) -> int:
    """Program value id of the old value of state leaf ``leaf``."""
    return self.program.invars[self.num_param_leaves + leaf]

  def hidden_out(self, leaf: int):
    """Program atom of the new value of state leaf ``leaf``."""
    return self.program.outvars[self.num_out_leaves + leaf]

  @property
  def num_out_leaves(self) -> int:
    return len(self.program.outvars) - self.num_state_leaves

  def group_leaves(self, g: int) -> list:
    """State leaf indices of group ``g`` in ``S`` order."""
    return [i for i in self.hidden if self.hidden_group[i] == g]

  def report(self, traces: Optional[dict] = None) -> str:
    """Human-readable summary: groups, relations, traces, diagnostics.

    Args:
      traces: optional ``{label: array-like}`` of trace leaves to list with
        shapes and bytes (learners pass theirs).

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
          f"  {r.name}: {r.primitive.name} x={r.x_shape} y={r.y_shape} "
          f"[{weights}] -> {fed}"
      )
    p(f"non-temporal parameters ({len(self.non_temporal)}):")
    for name in self.non_temporal:
      p(f"  {name}")
    if traces is not None:
      total = 0
      p(f"traces ({len(traces)}):")
      for label, leaf in traces.items():
        nbytes = int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
        total += nbytes
        p(
            f"  {label}: shape={tuple(leaf.shape)} "
            f"dtype={np.dtype(leaf.dtype).name} {_fmt_bytes(nbytes)}"
        )
      p(f"  total: {_fmt_bytes(total)}")
    p(f"diagnostics ({len(self.diagnostics)}):")
    for d in self.diagnostics:
      p(f"  {d}")
    p(
        "D-RTRL on this step: "
        + ("exact" if self.drtrl_exact else "approximate (see warnings)")
    )
    return out.getvalue()


def _bits(mask: int):
  i = 0
  while mask:
    if mask & 1:
      yield i
    mask >>= 1
    i += 1


def compile_step(
    model: hk.TransformedWithState,
    params: hk.Params,
    state: hk.State,
    rng: Any,
    x: Any,
) -> CompiledStep:
  """Analyses one step ``model.apply(params, state, rng, x)``.

  Only shapes and dtypes of the example arguments matter.

  Args:
    model: the ``hk.transform_with_state`` step.
    params: example parameters.
    state: example model state (without learner entries).
    rng: example rng (or ``None``).
    x: example input of one step.

  Returns:
    A :class:`CompiledStep`.

  Raises:
    CompileError: if the step has no hidden state, an ETP weight is not a
      parameter, a parameter is written inside the step, or an ETP op sits
      inside ``scan``/``cond``/``while`` or a custom-derivative function.
  """
  if not isinstance(model, hk.TransformedWithState):
    raise CompileError(
        "Expected an hk.TransformedWithState (hk.transform_with_state), got "
        f"{type(model).__name__}."
    )
  params = hk.data_structures.to_mutable_dict(params)
  state = hk.data_structures.to_mutable_dict(state)
  param_leaves, _ = tree_util.tree_flatten_with_path(params)
  param_paths = [_path(p) for p, _ in param_leaves]
  state_paths = [(m, n) for m, n, _ in state_lib.iter_state(state)]
  hidden = [
      i for i, (m, n) in enumerate(state_paths) if state_lib.is_hidden_name(n)
  ]
  if not hidden:
    raise CompileError(
        "The step declares no hidden state. Keep recurrent memory with "
        "haiku_etp.get_hidden_state / set_hidden_state so the learners know "
        "what to trace."
    )
  for i in hidden:
    m, n = state_paths[i]
    if state_lib.state_path(m, n) in param_paths:
      raise CompileError(
          f"Parameter {state_lib.state_path(m, n)!r} is written inside the "
          "step as hidden state; parameters must stay fixed during a step."
      )

  args = (params, state, rng, x)
  leaves, in_tree = tree_util.tree_flatten(args)
  out_tree_box = []

  def flat_apply(*flat):
    out = model.apply(*tree_util.tree_unflatten(in_tree, flat))
    out_leaves, out_tree = tree_util.tree_flatten(out)
    out_tree_box.append(out_tree)
    return out_leaves

  avals = [
      jax.ShapeDtypeStruct(np.shape(l), jax.numpy.result_type(l))
      for l in leaves
  ]
  closed = jax.make_jaxpr(flat_apply)(*avals)
  flat = _Flattener()
  invars = [flat.new(v.aval) for v in closed.jaxpr.invars]
  outvars = flat.run(closed.jaxpr, list(closed.consts), invars)
  program = Program(flat.nodes, flat.avals, invars, outvars)
  num_p, num_s = len(param_paths), len(state_paths)
  num_out = len(outvars) - num_s
  diagnostics = []

  # Dependencies of every value on the input leaves (all paths).
  deps = {i: 1 << k for k, i in enumerate(invars)}

  def dep_of(a):
    return 0 if isinstance(a, Lit) else deps[a]

  for node in program.nodes:
    d = 0
    for a in node.ins:
      d |= dep_of(a)
    for o in node.outs:
      deps[o] = d

  param_mask = (1 << num_p) - 1
  state_mask = ((1 << num_s) - 1) << num_p
  state_in = lambda i: num_p + i
  hidden_out = lambda i: outvars[num_out + i]
  written = {i for i in range(num_s) if hidden_out(i) != invars[state_in(i)]}

  # Relations: ETP nodes, their operands traced to parameters.
  relations_raw = []
  names_used = {}
  for ni, node in enumerate(program.nodes):
    if not node.etp:
      continue
    prim = node.prim
    weights = {}
    for key, idx in prim.trainable_invars(node.params).items():
      a = node.ins[idx]
      d = dep_of(a)
      src = [param_paths[k] for k in _bits(d & param_mask)]
      bad_state = [k - num_p for k in _bits(d & state_mask)]
      other = d & ~(param_mask | state_mask)
      if any(k in written for k in bad_state):
        m, n = state_paths[[k for k in bad_state if k in written][0]]
        raise CompileError(
            f"The {key!r} operand of {prim.name} comes from state "
            f"{state_lib.state_path(m, n)!r}, which the step writes: a "
            "parameter written inside the step cannot be trained online. "
            "Use hk.get_parameter for trainable weights."
        )
      if not src or bad_state or other:
        what = (
            "state"
            if bad_state
            else ("the step's input or rng" if other else "a constant")
        )
        raise CompileError(
            f"The {key!r} operand of {prim.name} (shape "
            f"{_shape(flat.aval(a))}) is not a parameter: it comes from "
            f"{what}. ETP weights must be computed from hk.get_parameter "
            "values only."
        )
      weights[key] = tuple(src)
    base = next(iter(weights.values()))[0] if weights else prim.name
    count = names_used.get(base, 0) + 1
    names_used[base] = count
    name = base if count == 1 else f"{base}#{count}"
    x_atom = (
        None if prim.x_invar_index is None else node.ins[prim.x_invar_index]
    )
    x_shape = None if x_atom is None else _shape(flat.aval(x_atom))
    relations_raw.append((name, ni, weights, x_shape))
  rel_of_node = {ni: r for r, (_, ni, _, _) in enumerate(relations_raw)}
  num_h = len(hidden)
  hid_index = {leaf: k for k, leaf in enumerate(hidden)}

  # Tail reach: hidden inputs (bits 0..H-1) and ETP outputs (bits H..) through
  # position-preserving ops only; crossing: the same sources through >= 1 cut.
  tail = {invars[state_in(leaf)]: 1 << k for k, leaf in enumerate(hidden)}
  cross = {}
  get = lambda m, a: 0 if isinstance(a, Lit) else m.get(a, 0)
  tangent_nodes = []
  for ni, node in enumerate(program.nodes):
    t_in = c_in = 0
    for a in node.ins:
      t_in |= get(tail, a)
      c_in |= get(cross, a)
    if node.etp:
      t_out, c_out = 1 << (num_h + rel_of_node[ni]), t_in | c_in
    elif node.mixing:
      t_out, c_out = 0, t_in | c_in
    else:
      t_out, c_out = t_in, c_in
      if t_in:
        tangent_nodes.append(ni)
    for o in node.outs:
      if t_out:
        tail[o] = t_out
      if c_out:
        cross[o] = c_out

  # Groups: union-find over hidden leaves linked by tails, equal shapes only.
  parent = list(range(num_h))

  def find(k):
    while parent[k] != k:
      parent[k] = parent[parent[k]]
      k = parent[k]
    return k

  shape_of = lambda leaf: _shape(flat.avals[invars[state_in(leaf)]])
  path_of = lambda leaf: state_lib.state_path(*state_paths[leaf])
  for k, leaf in enumerate(hidden):
    for j in _bits(get(tail, hidden_out(leaf)) & ((1 << num_h) - 1)):
      if j == k:
        continue
      if shape_of(hidden[j]) == shape_of(leaf):
        parent[find(j)] = find(k)
      else:
        diagnostics.append(
            Diagnostic(
                "warning",
                "unaligned_memory",
                f"{path_of(leaf)!r} {shape_of(leaf)} depends on "
                f"{path_of(hidden[j])!r} {shape_of(hidden[j])} through "
                "position-preserving ops but their shapes differ, so they "
                "cannot share a group; D-RTRL ignores this dependency "
                "across steps.",
            )
        )
  roots = []
  for k in range(num_h):
    if find(k) not in roots:
      roots.append(find(k))
  hidden_group = {leaf: roots.index(find(k)) for k, leaf in enumerate(hidden)}
  groups = []
  for g in range(len(roots)):
    leaves_g = [leaf for leaf in hidden if hidden_group[leaf] == g]
    modules = sorted({state_paths[l][0] for l in leaves_g})
    name = (
        modules[0]
        if len(modules) == 1
        else "+".join(path_of(l) for l in leaves_g)
    )
    aval = flat.avals[invars[state_in(leaves_g[0])]]
    groups.append(
        HiddenGroup(
            name,
            tuple(path_of(l) for l in leaves_g),
            shape_of(leaves_g[0]),
            aval.dtype,
        )
    )
  gnames = [g.name for g in groups]
  for g, gname in enumerate(gnames):
    if gnames.count(gname) > 1:
      groups[g] = groups[g]._replace(name=f"{gname}[{g}]")

  # Memory that crosses a cut (ETP or mixing op) between steps.
  for k, leaf in enumerate(hidden):
    for j in _bits(get(cross, hidden_out(leaf)) & ((1 << num_h) - 1)):
      src, dst = groups[hidden_group[hidden[j]]], groups[hidden_group[leaf]]
      diagnostics.append(
          Diagnostic(
              "warning",
              "cut_memory_path",
              f"{path_of(leaf)!r} (group {dst.name}) depends on the previous "
              f"{path_of(hidden[j])!r} (group {src.name}) through an ETP or "
              "mixing op; D and the traces cut that path, so D-RTRL and "
              "ES-D-RTRL are approximate here.",
          )
      )

  relations = []
  for r, (name, ni, weights, x_shape) in enumerate(relations_raw):
    node = program.nodes[ni]
    y_shape = _shape(flat.avals[node.outs[0]])
    bit = 1 << (num_h + r)
    fed, crossed = [], []
    for leaf in hidden:
      g = hidden_group[leaf]
      if get(tail, hidden_out(leaf)) & bit and g not in fed:
        fed.append(g)
      elif get(cross, hidden_out(leaf)) & bit and g not in crossed:
        crossed.append(g)
    aligned = []
    for g in sorted(fed):
      v = groups[g].shape
      ok = (
          y_shape == v
          if node.prim.x_invar_index is not None
          else _broadcasts(y_shape, v)
      )
      if ok:
        aligned.append(g)
      else:
        diagnostics.append(
            Diagnostic(
                "warning",
                "unaligned_relation",
                f"{name} ({node.prim.name}) output {y_shape} reaches group "
                f"{groups[g].name} {v} but does not line up with its "
                "positions; it gets only the in-window gradient there.",
            )
        )
    for g in crossed:
      if g not in fed:
        diagnostics.append(
            Diagnostic(
                "warning",
                "relation_through_cut",
                f"{name} reaches group {groups[g].name} only through another "
                "ETP or mixing op; that path gets only the in-window "
                "gradient.",
            )
        )
    relations.append(
        Relation(
            name,
            node.prim,
            dict(node.params),
            ni,
            weights,
            x_shape,
            y_shape,
            tuple(aligned),
        )
    )

  # Parameters: which reach hidden state at all, and how.
  reach_hidden = 0
  for leaf in hidden:
    reach_hidden |= get(deps, hidden_out(leaf))
  etp_params = {p for r in relations for ps in r.weights.values() for p in ps}
  non_temporal = []
  for k, path in enumerate(param_paths):
    if not reach_hidden >> k & 1:
      non_temporal.append(path)
    elif path not in etp_params:
      diagnostics.append(
          Diagnostic(
              "warning",
              "untraced_parameter",
              f"Parameter {path!r} reaches hidden state outside any ETP op; "
              "it gets only the in-window gradient. Route it through "
              "haiku_etp.dense/conv/elementwise to trace it.",
          )
      )
  for m, n in state_paths:
    if not state_lib.is_hidden_name(n):
      diagnostics.append(
          Diagnostic(
              "info",
              "carried_state",
              f"{state_lib.state_path(m, n)!r} is ordinary state: carried "
              "across steps, not traced.",
          )
      )
  for i in hidden:
    if i not in written:
      diagnostics.append(
          Diagnostic(
              "info",
              "unwritten_hidden",
              f"Hidden state {path_of(i)!r} is never written by the step.",
          )
      )

  weight_nodes = sorted(
      _backward_slice(
          program,
          [
              program.nodes[r.node].ins[i]
              for r in relations
              for i in r.primitive.trainable_invars(r.params).values()
          ],
      )
  )
  return CompiledStep(
      program=program,
      in_tree=in_tree,
      out_tree=out_tree_box[0],
      num_param_leaves=num_p,
      num_state_leaves=num_s,
      param_paths=param_paths,
      state_paths=state_paths,
      hidden=hidden,
      hidden_group=hidden_group,
      groups=groups,
      relations=relations,
      non_temporal=non_temporal,
      diagnostics=diagnostics,
      tangent_nodes=tangent_nodes,
      weight_nodes=weight_nodes,
  )


def _broadcasts(y_shape, v_shape) -> bool:
  if len(y_shape) > len(v_shape):
    return False
  tail = v_shape[len(v_shape) - len(y_shape) :]
  return all(a == b or a == 1 for a, b in zip(y_shape, tail))


def _backward_slice(program: Program, atoms: Sequence[Any]) -> set:
  """Indices of the nodes needed to compute ``atoms``."""
  producer = {o: ni for ni, n in enumerate(program.nodes) for o in n.outs}
  need, stack = set(), [a for a in atoms if not isinstance(a, Lit)]
  while stack:
    a = stack.pop()
    ni = producer.get(a)
    if ni is None or ni in need:
      continue
    need.add(ni)
    stack.extend(x for x in program.nodes[ni].ins if not isinstance(x, Lit))
  return need
