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
"""A model step as a flat program, and how each op moves positions.

A step's jaxpr is flattened into one list of :class:`Node` over integer value
ids, with nested ``jit``/``checkpoint`` inlined. Every node records, for each
(input, output) pair, how the output's positions relate to the input's
(:class:`Flow`). That is decided from what the primitive *is* -- an explicit
list of elementwise primitives, the structural ops whose position maps are
known, and opaque ``custom_jvp``/``custom_vjp`` calls classified by their
bodies and derivative rules -- never from matching shapes: ``cumsum``,
``sort``, ``softmax`` or a mean-centring ``custom_jvp`` keep the shape and
still mix positions. Anything not known to preserve positions mixes them.

:func:`propagate` runs bit masks forward over a program with a rule per node;
the compiler asks every structural question through it.
"""

import dataclasses
import enum
from typing import (
    Any,
    Callable,
    Iterator,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Union,
    cast,
)

import jax
from jax import lax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.core import primitive


def set_bits(mask: int) -> Iterator[int]:
  """The indices of the set bits of ``mask``, lowest first."""
  i = 0
  while mask:
    if mask & 1:
      yield i
    mask >>= 1
    i += 1


class Flow(enum.IntEnum):
  """How an op's output positions depend on one of its inputs.

  ``KEEP``: position by position, input axes aligned with the output's
  trailing axes (NumPy broadcasting). ``SHIFT``: position by position, but a
  broadcast or unit reshape maps the input's axes elsewhere than the trailing
  ones. ``RELABEL``: a reshape that keeps the leading (batch) axis and
  renumbers the other positions one to one (a flatten). ``CUT``: outputs mix
  input positions. Larger values are stronger; a pair's flow is the
  strongest of its paths.
  """

  KEEP = 1
  SHIFT = 2
  RELABEL = 3
  CUT = 4


# Primitives that act position by position on operands of the output's shape
# (or on scalar literals).
ELEMENTWISE = frozenset(
    {
        "abs",
        "acos",
        "acosh",
        "add",
        "and",
        "asin",
        "asinh",
        "atan",
        "atan2",
        "atanh",
        "bessel_i0e",
        "bessel_i1e",
        "cbrt",
        "ceil",
        "clamp",
        "clz",
        "complex",
        "conj",
        "convert_element_type",
        "copy",
        "copy_p",
        "cos",
        "cosh",
        "digamma",
        "div",
        "eq",
        "erf",
        "erf_inv",
        "erfc",
        "exp",
        "exp2",
        "expm1",
        "floor",
        "ge",
        "gt",
        "igamma",
        "igamma_grad_a",
        "igammac",
        "imag",
        "integer_pow",
        "is_finite",
        "le",
        "lgamma",
        "log",
        "log1p",
        "logistic",
        "lt",
        "max",
        "min",
        "mul",
        "mulhi",
        "ne",
        "neg",
        "nextafter",
        "not",
        "or",
        "polygamma",
        "population_count",
        "pow",
        "real",
        "reduce_precision",
        "regularized_incomplete_beta",
        "rem",
        "round",
        "rsqrt",
        "select_n",
        "shift_left",
        "shift_right_arithmetic",
        "shift_right_logical",
        "sign",
        "sin",
        "sinh",
        "sqrt",
        "square",
        "stop_gradient",
        "sub",
        "tan",
        "tanh",
        "xor",
        "zeta",
    }
)  # pyformat: disable
# Primitives whose i-th output is their i-th operand (annotations, barriers).
IDENTITY = frozenset(
    {
        "optimization_barrier",
        "device_put",
        "sharding_constraint",
        "pvary",
        "pcast",
        "mesh_cast",
        "reshard",
    }
)  # pyformat: disable
_RESHAPES = frozenset({"reshape", "squeeze", "expand_dims"})
_INLINE = frozenset(
    {"pjit", "jit", "closed_call", "core_call", "remat", "remat2", "checkpoint"}
)
CUSTOM_JVP = frozenset({"custom_jvp_call"})
CUSTOM_VJP = frozenset({"custom_vjp_call", "custom_vjp_call_jaxpr"})


@dataclasses.dataclass(frozen=True)
class Lit:
  """A literal or closed-over constant in the flat program."""

  val: Any


# An operand in the flat program: a value id or a literal.
Atom = Union[int, Lit]
# ``flows[i][j]``: the flow from input ``i`` to output ``j``, or ``None``.
FlowRow = tuple[Optional["Flow"], ...]
FlowTable = tuple[FlowRow, ...]


@dataclasses.dataclass
class Node:
  """One op of the flat program.

  Attributes:
    prim: the primitive.
    params: its params as bound.
    ins: operands, value ids or :class:`Lit`.
    outs: result value ids.
    etp: whether ``prim`` is an ETP primitive.
    flows: ``flows[i][j]``, the :class:`Flow` from input ``i`` to output
      ``j`` (``None`` where the output does not depend on the input). Empty
      for ETP nodes, which the compiler treats apart.
  """

  prim: Any
  params: dict[str, Any]
  ins: tuple[Atom, ...]
  outs: tuple[int, ...]
  etp: bool
  flows: FlowTable = ()


@dataclasses.dataclass
class Program:
  """A step flattened to ops over integer value ids."""

  nodes: list[Node]
  avals: dict[int, jax.core.ShapedArray]
  invars: list[int]
  outvars: list[Atom]

  def aval(self, atom: Atom) -> jax.core.ShapedArray:
    """Abstract value of a value id or literal."""
    return _typeof(atom.val) if isinstance(atom, Lit) else self.avals[atom]


def _typeof(value: Any) -> jax.core.ShapedArray:
  # The values of a model step are arrays (jax.typeof says AbstractValue).
  return cast(jax.core.ShapedArray, jax.typeof(value))


def shape(aval: Any) -> tuple[int, ...]:
  return tuple(getattr(aval, "shape", ()))


def bind(node: Node, vals: Sequence[Any]) -> list:
  """Binds ``node``'s primitive on ``vals``; always returns a list."""
  params = node.prim.get_bind_params(node.params)
  out = node.prim.bind(*vals, **params)
  return list(out) if node.prim.multiple_results else [out]


def sub_jaxprs(params: Mapping[str, Any]) -> Iterator[jex.core.Jaxpr]:
  """The jaxprs held in an equation's params."""
  for v in params.values():
    items = v if isinstance(v, (tuple, list)) else (v,)
    for item in items:
      if isinstance(item, jex.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jex.core.Jaxpr):
        yield item


def _find_etp(jaxpr: jex.core.Jaxpr) -> Optional[str]:
  for eqn in jaxpr.eqns:
    if primitive.is_etp_primitive(eqn.primitive):
      return eqn.primitive.name
    for sub in sub_jaxprs(eqn.params):
      found = _find_etp(sub)
      if found:
        return found
  return None


# Ops the compiler reads as relations: ETP ops and the plain layers it
# rewrites into them (compiler/plain_layers.py).
_LEARNABLE = frozenset({"dot_general", "conv_general_dilated"})


def _learnable_inside(params: Mapping[str, Any]) -> bool:
  """Whether a sub-jaxpr of ``params`` binds an ETP op or a plain layer."""

  def visit(jaxpr: jex.core.Jaxpr) -> bool:
    for eqn in jaxpr.eqns:
      if primitive.is_etp_primitive(eqn.primitive):
        return True
      if eqn.primitive.name in _LEARNABLE:
        return True
      if any(visit(sub) for sub in sub_jaxprs(eqn.params)):
        return True
    return False

  return any(visit(sub) for sub in sub_jaxprs(params))


def _inline_jaxpr(
    params: Mapping[str, Any],
) -> Optional[tuple[jex.core.Jaxpr, list[Any]]]:
  for key in ("jaxpr", "call_jaxpr"):
    inner = params.get(key)
    if isinstance(inner, jex.core.ClosedJaxpr):
      return inner.jaxpr, list(inner.consts)
    if isinstance(inner, jex.core.Jaxpr):
      return inner, []
  return None


# Parameter-free ops that are linear in one operand when the others are
# constant: a chain of them before an ETP op's input (a flatten, a mean over
# positions) is folded into the op's input map by the cross-group traces.
LINEAR_IN_ONE = frozenset(
    {
        "reshape",
        "squeeze",
        "expand_dims",
        "broadcast_in_dim",
        "transpose",
        "reduce_sum",
        "rev",
        "slice",
        "pad",
        "concatenate",
        "convert_element_type",
        "copy",
        "copy_p",
        "neg",
        "mul",
        "div",
        "add",
        "sub",
        "dot_general",
        "conv_general_dilated",
    }
)  # pyformat: disable


def is_reshape(node: Node) -> bool:
  """Whether ``node`` only reshapes its one array operand."""
  return node.prim.name in _RESHAPES


def producers(program: Program) -> dict[int, int]:
  """``{value id: index of the node that computes it}``."""
  return {o: ni for ni, n in enumerate(program.nodes) for o in n.outs}


def backward_slice(program: Program, atoms: Sequence[Atom]) -> set[int]:
  """Indices of the nodes needed to compute ``atoms``."""
  producer = producers(program)
  need: set[int] = set()
  stack = [a for a in atoms if not isinstance(a, Lit)]
  while stack:
    a = stack.pop()
    ni = producer.get(a)
    if ni is None or ni in need:
      continue
    need.add(ni)
    stack.extend(x for x in program.nodes[ni].ins if not isinstance(x, Lit))
  return need


def _strip_leading_ones(s: Sequence[int]) -> tuple[int, ...]:
  s = tuple(s)
  while s and s[0] == 1:
    s = s[1:]
  return s


def _reshape_flow(
    in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> Flow:
  """A reshape keeps positions iff it only adds or drops unit axes.

  One that keeps the leading axis renumbers the others one to one.
  """
  if tuple(d for d in in_shape if d != 1) != tuple(
      d for d in out_shape if d != 1
  ):
    keeps_lead = in_shape and out_shape and in_shape[0] == out_shape[0] != 1
    return Flow.RELABEL if keeps_lead else Flow.CUT
  if _strip_leading_ones(in_shape) == _strip_leading_ones(out_shape):
    return Flow.KEEP
  return Flow.SHIFT


def _broadcast_flow(
    params: Mapping[str, Any],
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
) -> Flow:
  dims = tuple(params["broadcast_dimensions"])
  n, r = len(out_shape), len(in_shape)
  return Flow.KEEP if dims == tuple(range(n - r, n)) else Flow.SHIFT


class Flattener:
  """Flattens closed jaxprs into one :class:`Program`.

  Opaque calls are classified once per call jaxpr and input avals
  (:func:`opaque_flows` memoises them).
  """

  def __init__(self, bodies_only: bool = False):
    self.nodes: list[Node] = []
    self.avals: dict[int, jax.core.ShapedArray] = {}
    self._next = 0
    # Inside an opaque call's body or derivative rule, nested calls are
    # evaluated as plain values, so only their bodies matter.
    self._bodies_only = bodies_only
    # Values an unrolled scan slices per iteration (its ``xs``).
    self.sliced: set[int] = set()
    # Stacking seen through (:meth:`_note`): a value with a leading unit
    # axis added to an array, a concatenation of such rows along axis 0,
    # and how many reads of a row were taken from the array itself.
    self._unit: dict[int, Atom] = {}
    self._rows: dict[int, list[Atom]] = {}
    self.aliased = 0

  def new(self, aval: jax.core.AbstractValue) -> int:
    i = self._next
    self._next += 1
    # The values of a model step are arrays (a jaxpr types them AbstractValue).
    self.avals[i] = cast(jax.core.ShapedArray, aval)
    return i

  def aval(self, atom: Atom) -> jax.core.ShapedArray:
    return _typeof(atom.val) if isinstance(atom, Lit) else self.avals[atom]

  def program(self, closed: jex.core.ClosedJaxpr) -> Program:
    """Flattens ``closed`` (a ``ClosedJaxpr``) into a new program."""
    invars = [self.new(v.aval) for v in closed.jaxpr.invars]
    outvars = self.run(closed.jaxpr, list(closed.consts), invars)
    return Program(self.nodes, self.avals, invars, outvars)

  def run(
      self, jaxpr: jex.core.Jaxpr, consts: Sequence[Any], ins: Sequence[Atom]
  ) -> list[Atom]:
    env: dict[jex.core.Var, Atom] = {}
    for v, c in zip(jaxpr.constvars, consts):
      env[v] = Lit(c)
    for v, a in zip(jaxpr.invars, ins):
      env[v] = a

    def read(v: Any) -> Atom:
      if isinstance(v, jex.core.Literal):
        return Lit(v.val)
      return env[v]

    for eqn in jaxpr.eqns:
      args = [read(v) for v in eqn.invars]
      inline = (
          _inline_jaxpr(eqn.params) if eqn.primitive.name in _INLINE else None
      )
      if inline is not None:
        for v, o in zip(eqn.outvars, self.run(inline[0], inline[1], args)):
          env[v] = o
        continue
      if eqn.primitive.name == "scan" and _learnable_inside(eqn.params):
        for v, o in zip(eqn.outvars, self._unroll(eqn, args)):
          env[v] = o
        continue
      if eqn.primitive.name == "cond" and _learnable_inside(eqn.params):
        for v, o in zip(eqn.outvars, self._select(eqn, args)):
          env[v] = o
        continue
      row = self._row_read(eqn, args)
      if row is not None:
        env[eqn.outvars[0]] = row
        continue
      is_etp = primitive.is_etp_primitive(eqn.primitive)
      if not is_etp:
        for sub in sub_jaxprs(eqn.params):
          found = _find_etp(sub)
          if found:
            raise UnreadableStep(
                f"The ETP op {found!r} sits inside {eqn.primitive.name!r}. "
                "ETP ops inside while_loop (a loop without a static trip "
                "count) or custom derivative functions are not supported; "
                "call them at the top level of the step (jit, cond, switch, "
                "scan and fori_loop with static bounds are fine)."
            )
      outs = tuple(self.new(v.aval) for v in eqn.outvars)
      node = Node(eqn.primitive, dict(eqn.params), tuple(args), outs, is_etp)
      if not is_etp:
        node.flows = _uniform_rows(self._flows(node))
        self._note(node)
      self.nodes.append(node)
      for v, o in zip(eqn.outvars, outs):
        env[v] = o
    return [read(v) for v in jaxpr.outvars]

  def _select(self, eqn: Any, args: Sequence[Atom]) -> list[Atom]:
    """``cond`` / ``switch`` as every branch followed by a select.

    Each branch runs on the operands and ``select_n(index, *outs)`` keeps
    the taken branch's results, so the relations of every branch are in
    the program and only the taken one's reach the state: ``select_n``'s
    derivative with respect to a branch that is not taken is zero, which is
    what ``cond``'s is.
    """
    index, operands = args[0], list(args[1:])
    outs = [
        self.run(branch.jaxpr, list(branch.consts), operands)
        for branch in eqn.params["branches"]
    ]
    results: list[Atom] = []
    for j, v in enumerate(eqn.outvars):
      cases = tuple(out[j] for out in outs)
      if all(c == cases[0] for c in cases[1:]):
        results.append(cases[0])
        continue
      out = self.new(v.aval)
      node = Node(lax.select_n_p, {}, (index,) + cases, (out,), False)
      node.flows = _uniform_rows(self._flows(node))
      self.nodes.append(node)
      results.append(out)
    return results

  def _emit(self, fn: Callable[..., Any], ins: Sequence[Atom]) -> int:
    """Appends the one equation ``fn`` binds on ``ins``; returns its
    result."""
    avals = [self.aval(a) for a in ins]
    jaxpr = jax.make_jaxpr(fn)(
        *[jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals]
    ).jaxpr
    (eqn,) = jaxpr.eqns
    out = self.new(eqn.outvars[0].aval)
    node = Node(eqn.primitive, dict(eqn.params), tuple(ins), (out,), False)
    node.flows = _uniform_rows(self._flows(node))
    self._note(node)
    self.nodes.append(node)
    return out

  def _note(self, node: Node) -> None:
    """Remembers a stacking that later reads can see through.

    A leading unit axis added to an array (``broadcast_in_dim`` or
    ``reshape``), a ``concatenate`` of such rows along axis 0 (a stack:
    what an unrolled scan makes of its per-iteration results, and how a
    layer stack's per-layer state is put together), and a unit slice of a
    stack along axis 0 (the row's value with the unit axis).
    """
    name = node.prim.name
    ins = [a for a in node.ins if not isinstance(a, Lit)]
    if len(ins) != len(node.ins) or len(node.outs) != 1:
      return
    out = node.outs[0]
    out_shape = shape(self.avals[out])
    if name in ("broadcast_in_dim", "reshape") and len(ins) == 1:
      in_shape = shape(self.aval(ins[0]))
      dims = node.params.get("broadcast_dimensions")
      plain = (
          dims == tuple(range(1, len(in_shape) + 1))
          if name == "broadcast_in_dim"
          else node.params.get("dimensions") is None
      )
      if plain and out_shape == (1,) + in_shape:
        self._unit[out] = ins[0]
    elif name == "concatenate" and node.params.get("dimension") == 0:
      if all(a in self._unit for a in ins):
        self._rows[out] = [self._unit[a] for a in ins]
    elif name == "slice" and ins[0] in self._rows:
      rows = self._rows[ins[0]]
      start = tuple(node.params["start_indices"])
      limit = tuple(node.params["limit_indices"])
      strides = node.params.get("strides")
      full = shape(self.aval(ins[0]))
      i = start[0]
      if (
          (strides is None or all(s == 1 for s in strides))
          and limit[0] == i + 1
          and all(a == 0 for a in start[1:])
          and limit[1:] == full[1:]
      ):
        self._unit[out] = rows[i]

  def _row_read(self, eqn: Any, args: Sequence[Atom]) -> Optional[Atom]:
    """The stacked row that ``eqn`` reads back (dropping the unit axis of
    a unit slice of a stack, see :meth:`_note`), or ``None``."""
    name = eqn.primitive.name
    if len(args) != 1 or isinstance(args[0], Lit) or args[0] not in self._unit:
      return None
    if name == "squeeze" and tuple(eqn.params["dimensions"]) != (0,):
      return None
    if name == "reshape" and eqn.params.get("dimensions") is not None:
      return None
    if name not in ("squeeze", "reshape"):
      return None
    row = self._unit[args[0]]
    want, have = eqn.outvars[0].aval, self.aval(row)
    if shape(want) != shape(have) or want.dtype != have.dtype:
      return None
    self.aliased += 1
    return row

  def _unroll(self, eqn: Any, args: Sequence[Atom]) -> list[Atom]:
    """``scan`` (``hk.scan``, ``hk.layer_stack``, a ``fori_loop`` with a
    static trip count) unrolled: its body once per iteration on the
    iteration's slice of ``xs``, the results stacked.

    The carry flows from one iteration to the next as in straight-line
    code. An ``xs`` that is a stack of rows (:meth:`_note`) is read row by
    row; any other is sliced and recorded in :attr:`sliced` (the compiler
    refuses a hidden state sliced so: a layer stack's own state, which the
    learners keep per layer, ``core/layer_state.py``).
    """
    p = eqn.params
    body = p["jaxpr"]
    n, nc, ncar = int(p["length"]), int(p["num_consts"]), int(p["num_carry"])
    consts = list(args[:nc])
    carry = list(args[nc : nc + ncar])
    xs = list(args[nc + ncar :])
    # A stack of rows (the rows' own values) is read row by row.
    stacked = (
        lambda x: not isinstance(x, Lit) and len(self._rows.get(x, ())) == n
    )
    self.sliced.update(
        x for x in xs if not isinstance(x, Lit) and not stacked(x)
    )
    per_step: list[list[Atom]] = [[] for _ in range(n)]
    for i in reversed(range(n)) if p["reverse"] else range(n):
      x_i: list[Atom] = []
      for x in xs:
        if isinstance(x, Lit):
          x_i.append(Lit(np.asarray(x.val)[i]))
          continue
        if stacked(x):
          self.aliased += 1
          x_i.append(self._rows[x][i])
          continue
        piece = self._emit(lambda a, i=i: lax.slice_in_dim(a, i, i + 1), [x])
        x_i.append(self._emit(lambda a: lax.squeeze(a, (0,)), [piece]))
      outs = self.run(body.jaxpr, list(body.consts), consts + carry + x_i)
      carry, per_step[i] = list(outs[:ncar]), list(outs[ncar:])
    ys: list[Atom] = []
    for j in range(len(eqn.outvars) - ncar):
      rows = []
      for step in per_step:
        rows.append(self._emit(lambda a: jnp.expand_dims(a, 0), [step[j]]))
      ys.append(self._emit(lambda *a: lax.concatenate(a, 0), rows))
    return carry + ys

  def _flows(self, node: Node) -> FlowTable:
    name = node.prim.name
    n_in, n_out = len(node.ins), len(node.outs)
    in_shapes = [shape(self.aval(a)) for a in node.ins]
    out_shapes = [shape(self.avals[o]) for o in node.outs]
    every = lambda f: tuple((f,) * n_out for _ in range(n_in))
    if name in ELEMENTWISE:
      return every(Flow.KEEP)
    if name in IDENTITY:
      return tuple(
          tuple(Flow.KEEP if i == j else None for j in range(n_out))
          for i in range(n_in)
      )
    if name == "broadcast_in_dim":
      first = (_broadcast_flow(node.params, in_shapes[0], out_shapes[0]),)
      return (first,) + every(Flow.CUT)[1:]
    if name in _RESHAPES:
      first = (_reshape_flow(in_shapes[0], out_shapes[0]),)
      return (first,) + every(Flow.CUT)[1:]
    if name in CUSTOM_JVP or name in CUSTOM_VJP:
      call = node.params.get("call_jaxpr")
      if self._bodies_only and isinstance(call, jex.core.ClosedJaxpr):
        return jaxpr_flows(call)
      return opaque_flows(node, [self.aval(a) for a in node.ins])
    return every(Flow.CUT)


class UnreadableStep(ValueError):
  """A step the flattener cannot read (an ETP op inside a loop without a
  static trip count or a custom-derivative function)."""


class Traced(NamedTuple):
  """A function traced on abstract values and flattened (:func:`trace`).

  Attributes:
    flattener: the :class:`Flattener` that built ``program`` (what scans
      sliced, how many stacked reads it saw through).
    program: the flat program over the leaves of the arguments.
    in_tree: the arguments' pytree structure.
    out_tree: the result's pytree structure.
  """

  flattener: "Flattener"
  program: Program
  in_tree: Any
  out_tree: Any


def trace(fn: Callable[..., Any], *args: Any) -> Traced:
  """Traces ``fn(*args)`` on the shapes and dtypes of ``args``' leaves and
  flattens it; the program's inputs are those leaves in pytree order.

  Raises:
    UnreadableStep: an ETP op where the flattener cannot read it. Errors
      that ``fn`` raises while it is traced propagate as they are.
  """
  leaves, in_tree = jax.tree_util.tree_flatten(args)
  out_trees = []

  def flat(*flat_args: Any) -> list[Any]:
    out = fn(*jax.tree_util.tree_unflatten(in_tree, flat_args))
    out_leaves, out_tree = jax.tree_util.tree_flatten(out)
    out_trees.append(out_tree)
    return out_leaves

  avals = [
      jax.ShapeDtypeStruct(np.shape(l), jnp.result_type(l)) for l in leaves
  ]
  flattener = Flattener()
  program = flattener.program(jax.make_jaxpr(flat)(*avals))
  return Traced(flattener, program, in_tree, out_trees[0])


def drop_dead(program: Program) -> None:
  """Removes the nodes none of whose results is used."""
  live = {a for a in program.outvars if not isinstance(a, Lit)}
  kept = []
  for node in reversed(program.nodes):
    if any(o in live for o in node.outs):
      kept.append(node)
      live.update(a for a in node.ins if not isinstance(a, Lit))
  program.nodes[:] = kept[::-1]


def node_flows(program: Program, node: Node) -> FlowTable:
  """The flows of a new non-ETP ``node`` over ``program``'s values, as the
  flattener gives them (for rewrites that add nodes)."""
  flattener = Flattener()
  flattener.avals = program.avals
  return _uniform_rows(flattener._flows(node))


def _uniform_rows(flows: FlowTable) -> FlowTable:
  """Cuts a whole row when it cuts anywhere.

  The learners recompute a node on a tail with the cut inputs held constant;
  an input that cuts towards one output therefore cuts towards all.
  """
  return tuple(
      tuple(None if f is None else Flow.CUT for f in row)
      if Flow.CUT in row
      else tuple(row)
      for row in flows
  )


def row_keeps(row: FlowRow) -> bool:
  """Whether an input's flow row passes tails (keeps or shifts positions)."""
  return any(f in (Flow.KEEP, Flow.SHIFT) for f in row)


def propagate(
    program: Program,
    seeds: Mapping[int, Any],
    rule: Callable[[Node, list[Any]], Sequence[Any]],
    empty: Any = 0,
) -> dict[int, Any]:
  """Runs values forward over ``program``.

  Args:
    program: the flat program.
    seeds: initial values of some value ids (the rest start as ``empty``).
    rule: ``rule(node, in_values) -> out_values``, one per output; literal
      operands read as ``empty``.
    empty: the value of an unseeded id.

  Returns:
    ``{value id: value}`` for every id that is seeded or computed, where the
    value differs from ``empty``.
  """
  env = dict(seeds)
  get = lambda a: empty if isinstance(a, Lit) else env.get(a, empty)
  for node in program.nodes:
    for o, v in zip(node.outs, rule(node, [get(a) for a in node.ins])):
      if v != empty:
        env[o] = v
  return env


class Masks(NamedTuple):
  """Bit masks of sources per value id, by how they reach it.

  Attributes:
    tail: through position-preserving flows only.
    shift: as ``tail``, with at least one :attr:`Flow.SHIFT` on the way.
    relabel: through position-preserving flows and at least one
      :attr:`Flow.RELABEL` (a flatten), no ETP op and no cut.
    etp: through the inputs of one or more ETP ops, otherwise through
      position-preserving flows and relabels (the paths cross-group traces
      can follow).
    cross: through any other mixing: a cut, a relabel after an ETP op, or
      an ETP op's trainable operand.
  """

  tail: dict[int, int]
  shift: dict[int, int]
  relabel: dict[int, int]
  etp: dict[int, int]
  cross: dict[int, int]

  def at(self, which: str, atom: Atom) -> int:
    """The ``which`` mask of ``atom`` (0 for literals and unseen ids)."""
    if isinstance(atom, Lit):
      return 0
    return getattr(self, which).get(atom, 0)


# A value's five masks, in the order of :class:`Masks`' fields.
_Mask5 = tuple[int, int, int, int, int]


def _etp_masks(
    node: Node, ins: Sequence[_Mask5], etp_bits: Mapping[int, int]
) -> list[_Mask5]:
  """ETP node: its own bit is the tail; the input's tails cross one op."""
  xi = node.prim.x_invar_index
  t = s = p = e = c = 0
  for i, (ti, si, pi, ei, ci) in enumerate(ins):
    if i == xi:
      e |= ti | pi | ei
      c |= ci
    else:
      c |= ti | pi | ei | ci
  out = (etp_bits.get(id(node), 0), 0, 0, e, c)
  return [out] + [(0, 0, 0, 0, e | c)] * (len(node.outs) - 1)


def flow_masks(
    program: Program,
    seeds: Mapping[int, int],
    etp_bits: Optional[Mapping[int, int]] = None,
    etp_inputs: Optional[Mapping[int, Atom]] = None,
) -> Masks:
  """Tail, shift, relabel, one-ETP and cross masks of ``seeds``.

  Args:
    program: the flat program.
    seeds: ``{value id: bits}`` of the sources (old hidden values).
    etp_bits: ``{id(node): bit}`` seeding each ETP node's output (relation
      bits); ETP nodes not listed seed nothing.
    etp_inputs: ``{id(node): atom}``: read an ETP node's input masks at
      ``atom`` instead (a value its input is a fixed linear function of, so
      the op and that function are one linear map).

  Returns:
    The :class:`Masks`.
  """
  etp_bits = etp_bits or {}
  etp_inputs = etp_inputs or {}

  def rule(node: Node, ins: Sequence[_Mask5]) -> list[_Mask5]:
    if node.etp:
      return _etp_masks(node, ins, etp_bits)
    out = []
    for j in range(len(node.outs)):
      t = s = p = e = c = 0
      for i, flows in enumerate(node.flows):
        f = flows[j]
        if f is None:
          continue
        ti, si, pi, ei, ci = ins[i]
        if f == Flow.CUT:
          c |= ti | pi | ei | ci
        elif f == Flow.RELABEL:
          p, c = p | ti | pi, c | ei | ci
        else:
          t, p, e, c = t | ti, p | pi, e | ei, c | ci
          s |= ti if f == Flow.SHIFT else si
      out.append((t, s, p, e, c))
    return out

  empty: _Mask5 = (0, 0, 0, 0, 0)
  env: dict[int, _Mask5] = {k: (v, 0, 0, 0, 0) for k, v in seeds.items()}
  get = lambda a: empty if isinstance(a, Lit) else env.get(a, empty)
  for node in program.nodes:
    ins = [get(a) for a in node.ins]
    if node.etp and id(node) in etp_inputs:
      ins[node.prim.x_invar_index] = get(etp_inputs[id(node)])
    for o, v in zip(node.outs, rule(node, ins)):
      if v != empty:
        env[o] = v
  return Masks(*({k: v[n] for k, v in env.items() if v[n]} for n in range(5)))


def dependencies(
    program: Program,
    seeds: Mapping[int, int],
    etp_bits: Optional[Mapping[int, int]] = None,
) -> dict[int, int]:
  """Bit masks of the seeds each value depends on, through every op.

  ``etp_bits`` (``{id(node): bit}``) also seeds ETP nodes' outputs.
  """
  etp_bits = etp_bits or {}

  def rule(node: Node, ins: Sequence[int]) -> list[int]:
    if node.etp:
      d = etp_bits.get(id(node), 0)
      for m in ins:
        d |= m
      return [d] * len(node.outs)
    out = []
    for j in range(len(node.outs)):
      d = 0
      for i, flows in enumerate(node.flows):
        if flows[j] is not None:
          d |= ins[i]
      out.append(d)
    return out

  return propagate(program, seeds, rule)


def jaxpr_flows(
    closed: jex.core.ClosedJaxpr, num_inputs: Optional[int] = None
) -> FlowTable:
  """``flows[i][j]`` from input ``i`` to output ``j`` of a closed jaxpr.

  Nested opaque calls count by their bodies: this describes how values move
  through ``closed`` itself, as when it is an opaque call's body or rule.
  """
  flat = Flattener(bodies_only=True)
  program = flat.program(closed)
  n_in = len(program.invars) if num_inputs is None else num_inputs
  seeds = {v: 1 << i for i, v in enumerate(program.invars[:n_in])}
  masks = flow_masks(program, seeds)
  table = []
  for i in range(n_in):
    row: list[Optional[Flow]] = []
    for o in program.outvars:
      bit = 1 << i
      cut = masks.at("cross", o) | masks.at("etp", o) | masks.at("relabel", o)
      if cut & bit:
        row.append(Flow.CUT)
      elif masks.at("shift", o) & bit:
        row.append(Flow.SHIFT)
      elif masks.at("tail", o) & bit:
        row.append(Flow.KEEP)
      else:
        row.append(None)
    table.append(tuple(row))
  return tuple(table)


def _stronger(a: Optional[Flow], b: Optional[Flow]) -> Optional[Flow]:
  if a is None:
    return b
  if b is None:
    return a
  return max(a, b)


def _is_float(aval: Any) -> bool:
  return jnp.issubdtype(aval.dtype, jnp.inexact)


# Opaque-call classifications by (call jaxpr, input avals). The key holds the
# jaxpr itself, so its id cannot be reused while the entry lives.
_OPAQUE_MEMO: dict[tuple[Any, ...], FlowTable] = {}
_OPAQUE_MEMO_SIZE = 1024


def opaque_flows(
    node: Node, in_avals: Sequence[jax.core.ShapedArray]
) -> FlowTable:
  """Flows of a ``custom_jvp``/``custom_vjp`` call from its body and rule.

  The primal body says how values move; the derivative rule (the JVP for
  ``custom_jvp``, the VJP for ``custom_vjp``) says how tangents move, which
  is what ``D`` and ``D_f`` are built from. A pair keeps positions only if
  both do. A VJP sees a broadcast input as a reduction of the cotangent, so
  a ``custom_vjp`` input of another shape than its output cuts: the learners
  recover a ``custom_vjp`` Jacobian from its diagonal, which exists only for
  same-shape pairs. Results are memoised per call jaxpr and input avals.
  """
  call = node.params.get("call_jaxpr")
  key = (node.prim.name, call, tuple((shape(a), a.dtype) for a in in_avals))
  if key not in _OPAQUE_MEMO:
    if len(_OPAQUE_MEMO) >= _OPAQUE_MEMO_SIZE:
      _OPAQUE_MEMO.pop(next(iter(_OPAQUE_MEMO)))
    _OPAQUE_MEMO[key] = _opaque_flows(node, in_avals)
  return _OPAQUE_MEMO[key]


def _opaque_flows(
    node: Node, in_avals: Sequence[jax.core.ShapedArray]
) -> FlowTable:
  n_in, n_out = len(node.ins), len(node.outs)
  fallback = tuple((Flow.CUT,) * n_out for _ in range(n_in))
  call = node.params.get("call_jaxpr")
  if not isinstance(call, jex.core.ClosedJaxpr):
    return fallback
  table = [list(row) for row in jaxpr_flows(call)]
  floats = [i for i, a in enumerate(in_avals) if _is_float(a)]
  if not floats:
    return tuple(tuple(r) for r in table)
  fn = lambda *args: bind(node, args)
  avals = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in in_avals]

  def with_floats(args: Sequence[Any], float_args: Sequence[Any]) -> list[Any]:
    args = list(args)
    for i, v in zip(floats, float_args):
      args[i] = v
    return args

  try:
    if node.prim.name in CUSTOM_JVP:

      def jvp(args: Sequence[Any], tangents: Sequence[Any]) -> Any:
        primals = [args[i] for i in floats]
        f = lambda *fl: fn(*with_floats(args, fl))
        return jax.jvp(f, primals, list(tangents))[1]

      closed = jax.make_jaxpr(jvp)(avals, [avals[i] for i in floats])
      # Inputs: the n_in primals, then the float tangents; outputs: tangents.
      deriv = jaxpr_flows(closed)
      for k, i in enumerate(floats):
        for j in range(n_out):
          table[i][j] = _stronger(table[i][j], deriv[n_in + k][j])
    else:
      out_avals = jax.eval_shape(fn, *avals)

      def vjp(args: Sequence[Any], cts: Sequence[Any]) -> Any:
        f = lambda *fl: fn(*with_floats(args, fl))
        _, pull = jax.vjp(f, *[args[i] for i in floats])
        return pull(list(cts))

      closed = jax.make_jaxpr(vjp)(avals, list(out_avals))
      # Inputs: the n_in primals, then the output cotangents; outputs: the
      # float inputs' cotangents. Transposed, a flow reads j -> i.
      deriv = jaxpr_flows(closed)
      for k, i in enumerate(floats):
        for j in range(n_out):
          f = deriv[n_in + j][k]
          table[i][j] = _stronger(table[i][j], f)
      for i in floats:
        for j in range(n_out):
          if table[i][j] is not None and shape(in_avals[i]) != shape(
              out_avals[j]
          ):
            table[i][j] = Flow.CUT
  except Exception:  # pylint: disable=broad-except
    # A rule that cannot be traced on abstract values is treated as mixing:
    # the path is cut and announced, never silently trusted.
    return fallback
  return tuple(tuple(r) for r in table)


def preserves_positions(
    fn: Callable[..., Any], *avals: jax.ShapeDtypeStruct
) -> Optional[str]:
  """Why ``fn`` mixes positions, or ``None`` if it acts position by position.

  ``fn`` and (for floating inputs) its JVP are traced on ``avals`` and every
  op is classified with the same table the compiler uses.
  """
  closed = jax.make_jaxpr(fn)(*avals)
  if any(f == Flow.CUT for row in jaxpr_flows(closed) for f in row):
    return f"it mixes positions ({_mixing_ops(closed)})"
  if all(_is_float(a) for a in avals):
    jvp = lambda p, t: jax.jvp(fn, p, t)[1]
    closed = jax.make_jaxpr(jvp)(list(avals), list(avals))
    tangent_rows = jaxpr_flows(closed)[len(avals) :]
    if any(f == Flow.CUT for row in tangent_rows for f in row):
      return f"its derivative mixes positions ({_mixing_ops(closed)})"
  return None


def _mixing_ops(closed: jex.core.ClosedJaxpr) -> str:
  """Names of the ops in ``closed`` that mix positions (opaque calls opened)."""
  names: list[str] = []

  def visit(closed: jex.core.ClosedJaxpr) -> None:
    for node in Flattener(bodies_only=True).program(closed).nodes:
      if not any(f == Flow.CUT for row in node.flows for f in row):
        continue
      call = node.params.get("call_jaxpr")
      if node.prim.name in CUSTOM_JVP | CUSTOM_VJP and call is not None:
        visit(call)
      elif node.prim.name not in names:
        names.append(node.prim.name)

  visit(closed)
  return ", ".join(names) or "an unknown op"
