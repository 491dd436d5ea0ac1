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
"""Plain Haiku layers read as the ETP ops they equal.

``hk.Linear``, ``hk.ConvND``, ``hk.Embed``, ``hk.nets.MLP`` and the matmuls Haiku's cores
write themselves bind ``dot_general`` and ``conv_general_dilated`` with a
parameter as one operand, and add a parameter as the bias. The compiler
rewrites such equations in the flat program into the ETP op they equal
(``docs/design.md``, "Plain Haiku layers"), before it looks for relations:

* ``dot_general(x, w)`` with ``w`` computed from parameters alone, ``x``
  of shape ``(B, I)`` or ``(I,)``, ``w`` of shape ``(I, O)``, contracting the
  last axis of ``x`` with the first of ``w``: the dense op;
* ``conv_general_dilated(x, k)`` with ``k`` computed from parameters alone
  and one batch group: the conv op with the same strides, padding,
  dilations, layout and feature groups;
* either one followed by the addition of a parameter broadcast along the
  output features (channels) and used nowhere else: that op with a bias;
* ``gather`` of whole rows of a parameter table ``(V, H)`` by integer ids
  (``hk.Embed``'s ``table[ids]``): the embedding op.

The rewritten op computes the same values (the ETP ops' forward passes are
these equations) and carries the ETP op's trace rules. The model's code is
not touched; ``model.apply`` still runs the plain equations.
"""

from typing import Any, Optional

import jax
from jax import lax

from haiku_etp._src.core import program as program_lib
from haiku_etp._src.ops import conv as conv_lib
from haiku_etp._src.ops import dense as dense_lib
from haiku_etp._src.ops import elementwise as elementwise_lib
from haiku_etp._src.ops import embedding as embedding_lib

Lit = program_lib.Lit


def _param_only(program: program_lib.Program, num_params: int) -> set[int]:
  """Values computed from parameter leaves (and literals) alone."""
  only = set(program.invars[:num_params])
  for node in program.nodes:
    ids = [a for a in node.ins if not isinstance(a, Lit)]
    if not node.etp and ids and all(a in only for a in ids):
      only.update(node.outs)
  return only


def _uses(program: program_lib.Program) -> dict[int, list[int]]:
  """For each value id, the indices of the nodes that read it (the program's
  outputs count as a use, index ``-1``)."""
  uses: dict[int, list[int]] = {}
  for ni, node in enumerate(program.nodes):
    for a in node.ins:
      if not isinstance(a, Lit):
        uses.setdefault(a, []).append(ni)
  for a in program.outvars:
    if not isinstance(a, Lit):
      uses.setdefault(a, []).append(-1)
  return uses


def _default_precision(params: dict[str, Any]) -> bool:
  precision = params.get("precision")
  if precision is None:
    return True
  items = precision if isinstance(precision, tuple) else (precision,)
  return all(p is None or str(p).endswith("DEFAULT") for p in items)


def _weight_and_data(data: Any, weight: Any, only: set[int], params) -> bool:
  """Whether ``weight`` is computed from parameters alone and ``data`` is
  not, at the default precision."""
  return (
      not isinstance(data, Lit)
      and not isinstance(weight, Lit)
      and weight in only
      and data not in only
      and _default_precision(params)
  )


def _one_dtype(program: program_lib.Program, node: program_lib.Node) -> bool:
  """Whether ``node``'s operands and result share one dtype (no mixed
  precision, which the ETP ops do not model)."""
  out = program.avals[node.outs[0]].dtype
  return all(program.aval(a).dtype == out for a in node.ins)


def _dense(program: program_lib.Program, node: program_lib.Node, only) -> Any:
  """``(primitive, params)`` of the dense op ``node`` equals, or ``None``."""
  lhs, rhs = node.ins
  if not _weight_and_data(lhs, rhs, only, node.params):
    return None
  if not _one_dtype(program, node):
    return None
  (lc, rc), (lb, rb) = node.params["dimension_numbers"]
  ls = program_lib.shape(program.aval(lhs))
  rs = program_lib.shape(program.aval(rhs))
  if lb or rb or len(rs) != 2 or len(ls) not in (1, 2):
    return None
  if tuple(lc) != (len(ls) - 1,) or tuple(rc) != (0,):
    return None
  prim = (
      dense_lib.etp_batched_dense_p if len(ls) == 2 else dense_lib.etp_dense_p
  )
  return prim, {}, len(ls) - 1


def _conv(program: program_lib.Program, node: program_lib.Node, only) -> Any:
  """``(primitive, params, channel axis)`` of the conv op ``node`` equals,
  or ``None``."""
  lhs, rhs = node.ins
  if not _weight_and_data(lhs, rhs, only, node.params):
    return None
  if not _one_dtype(program, node):
    return None
  p = node.params
  if p["batch_group_count"] != 1:
    return None
  dn = p["dimension_numbers"]
  params = dict(
      strides=tuple(p["window_strides"]),
      padding=tuple(tuple(int(v) for v in pair) for pair in p["padding"]),
      lhs_dilation=tuple(p["lhs_dilation"]),
      rhs_dilation=tuple(p["rhs_dilation"]),
      feature_group_count=int(p["feature_group_count"]),
      batch_group_count=1,
      dimension_numbers=dn,
  )
  return conv_lib.etp_conv_p, params, dn.out_spec[1]


def _embed(
    program: program_lib.Program,
    node: program_lib.Node,
    only: set[int],
    producer: dict[int, int],
) -> Any:
  """The ids when ``node`` looks rows of a parameter table up by integer
  ids (``hk.Embed``'s ``table[ids]``), or ``None``."""
  table, indices = node.ins
  if not _weight_and_data(indices, table, only, {}):
    return None
  t_shape = program_lib.shape(program.aval(table))
  i_shape = program_lib.shape(program.aval(indices))
  dn = node.params["dimension_numbers"]
  if (
      len(t_shape) != 2
      or len(i_shape) < 2
      or i_shape[-1] != 1
      or tuple(dn.offset_dims) != (len(i_shape) - 1,)
      or tuple(dn.collapsed_slice_dims) != (0,)
      or tuple(dn.start_index_map) != (0,)
      or tuple(getattr(dn, "operand_batching_dims", ())) != ()
      or tuple(node.params["slice_sizes"]) != (1, t_shape[1])
  ):
    return None
  # The ids before the trailing index axis was added.
  at = producer.get(indices) if isinstance(indices, int) else None
  expand = None if at is None else program.nodes[at]
  ids = expand.ins[0] if expand is not None else Lit(None)
  if (
      expand is None
      or isinstance(ids, Lit)
      or expand.prim.name not in ("broadcast_in_dim", "reshape", "expand_dims")
      or program_lib.shape(program.aval(ids)) != i_shape[:-1]
      or not str(program.aval(ids).dtype).startswith(("int", "uint"))
  ):
    return None
  return ids


def _broadcast_param(
    program: program_lib.Program,
    atom: program_lib.Atom,
    axis: int,
    only: set[int],
    producer: dict[int, int],
) -> Optional[int]:
  """The rank-1 value computed from parameters alone that ``atom``
  broadcasts along ``axis``, or ``None``."""
  if isinstance(atom, Lit) or atom not in only or atom not in producer:
    return None
  bcast = program.nodes[producer[atom]]
  b = bcast.ins[0]
  if (
      bcast.prim.name != "broadcast_in_dim"
      or isinstance(b, Lit)
      or b not in only
      or len(program_lib.shape(program.aval(b))) != 1
      or tuple(bcast.params["broadcast_dimensions"]) != (axis,)
  ):
    return None
  return b


def _bias(
    program: program_lib.Program,
    ni: int,
    out: int,
    channel_axis: int,
    only: set[int],
    uses: dict[int, list[int]],
    producer: dict[int, int],
) -> Optional[tuple[int, int]]:
  """``(bias value id, index of the add node)`` when ``out``'s one use adds
  a parameter broadcast along ``channel_axis``."""
  users = uses.get(out, [])
  add = program.nodes[users[0]] if len(users) == 1 and users[0] >= 0 else None
  if add is None or add.prim.name != "add" or add.ins[0] == add.ins[1]:
    return None
  other = add.ins[1] if add.ins[0] == out else add.ins[0]
  b = _broadcast_param(program, other, channel_axis, only, producer)
  out_aval = program.avals[out]
  if (
      b is None
      or program_lib.shape(program.avals[add.outs[0]]) != out_aval.shape
      or program.aval(b).dtype != out_aval.dtype
      # The bias must exist where the op runs.
      or (b in producer and producer[b] > ni)
  ):
    return None
  return b, users[0]


def adopt(program: program_lib.Program, num_params: int) -> int:
  """Rewrites, in place, the plain equations of ``program`` that equal an
  ETP op into that op; the first ``num_params`` inputs are the parameter
  leaves. Returns how many were rewritten."""
  only = _param_only(program, num_params)
  uses = _uses(program)
  producer = program_lib.producers(program)
  dropped: set[int] = set()
  count = 0
  for ni, node in enumerate(program.nodes):
    if node.etp or ni in dropped:
      continue
    if node.prim.name == "gather":
      ids = _embed(program, node, only, producer)
      if ids is not None:
        program.nodes[ni] = program_lib.Node(
            embedding_lib.etp_batched_embedding_p,
            {"max_rows": None},
            (ids, node.ins[0]),
            node.outs,
            True,
        )
        count += 1
      continue
    if node.prim.name == "dot_general":
      found = _dense(program, node, only)
    elif node.prim.name == "conv_general_dilated":
      found = _conv(program, node, only)
    else:
      continue
    if found is None:
      continue
    prim, params, channel_axis = found
    out = node.outs[0]
    bias = _bias(program, ni, out, channel_axis, only, uses, producer)
    ins = tuple(node.ins)
    if bias is not None:
      b, add_index = bias
      ins = ins + (b,)
      out = program.nodes[add_index].outs[0]
      dropped.add(add_index)
    params = dict(params, has_bias=bias is not None)
    program.nodes[ni] = program_lib.Node(prim, params, ins, (out,), True)
    count += 1
  if dropped:
    program.nodes[:] = [
        n for ni, n in enumerate(program.nodes) if ni not in dropped
    ]
  return count


class _Parts:
  """Rewrites ``split`` / ``slice`` along the last axis of a value computed
  from dense or conv relations into one relation per part.

  ``v[..., a:b]`` commutes with every op on the way from the relations:
  elementwise ops (operands of ``v``'s shape or scalars), a parameter
  broadcast along the last axis, an earlier split, and the relation itself
  (its weight's and bias's output columns). Haiku's cores split one matmul
  into their gates (``hk.LSTM``) or split the gates after adding two
  matmuls and a bias (``hk.GRU``); after the rewrite each gate is fed by
  its own relations, aligned with the hidden state, as in the library's
  own cells.
  """

  def __init__(self, program: program_lib.Program):
    self.program = program
    self.producer = {
        o: (ni, k)
        for ni, n in enumerate(program.nodes)
        for k, o in enumerate(n.outs)
    }
    self._next = max(list(program.avals) + list(program.invars)) + 1
    self.emitted: list[program_lib.Node] = []
    self._memo: dict[tuple[Any, int, int], Any] = {}

  def _shape(self, atom: Any) -> tuple[int, ...]:
    return program_lib.shape(self.program.aval(atom))

  def emit(self, prim: Any, params: dict, ins: tuple, shape, dtype, etp=False):
    out = self._next
    self._next += 1
    self.program.avals[out] = jax.core.ShapedArray(tuple(shape), dtype)
    node = program_lib.Node(prim, dict(params), tuple(ins), (out,), etp)
    if not etp:
      node.flows = program_lib.node_flows(self.program, node)
    self.emitted.append(node)
    return out

  def _slice(self, atom: Any, axis: int, a: int, b: int) -> Any:
    shape = self._shape(atom)
    start = [0] * len(shape)
    limit = list(shape)
    start[axis], limit[axis] = a, b
    out_shape = tuple(limit[i] - start[i] for i in range(len(shape)))
    return self.emit(
        lax.slice_p,
        dict(
            start_indices=tuple(start), limit_indices=tuple(limit), strides=None
        ),
        (atom,),
        out_shape,
        self.program.aval(atom).dtype,
    )

  def _source(self, v: Any) -> Optional[tuple[program_lib.Node, int]]:
    if isinstance(v, Lit) or v not in self.producer:
      return None
    ni, k = self.producer[v]
    return self.program.nodes[ni], k

  def _commutes(self, node: program_lib.Node, shape: tuple[int, ...]) -> bool:
    return node.prim.name in program_lib.ELEMENTWISE and all(
        self._shape(a) in (shape, ()) for a in node.ins
    )

  def reaches_relation(self, v: Any) -> bool:
    """Whether ``v``'s last-axis parts lead to a dense or conv relation."""
    src = self._source(v)
    if src is None:
      return False
    node, k = src
    if node.etp:
      return _relation_kind(node) is not None
    if _split_axis(node, self._shape(node.ins[0])) is not None:
      return self.reaches_relation(node.ins[0])
    if self._commutes(node, self._shape(v)):
      return any(
          self.reaches_relation(a) for a in node.ins if self._shape(a) != ()
      )
    return False

  def part(self, v: Any, a: int, b: int) -> program_lib.Atom:
    """An atom holding ``v[..., a:b]``."""
    shape = self._shape(v)
    if shape == () or (a == 0 and b == shape[-1]):
      return v
    key = (v, a, b)
    if key in self._memo:
      return self._memo[key]
    out_shape = shape[:-1] + (b - a,)
    dtype = self.program.aval(v).dtype
    src = self._source(v)
    out: Any = None
    if src is not None:
      node, k = src
      kind = _relation_kind(node) if node.etp else None
      if kind == "dense":
        x, w, *bias = node.ins
        ins = (x, self._slice(w, 1, a, b)) + tuple(
            self._slice(c, 0, a, b) for c in bias
        )
        out = self.emit(node.prim, node.params, ins, out_shape, dtype, True)
      elif kind == "conv":
        x, kernel, *bias = node.ins
        axis = node.params["dimension_numbers"].rhs_spec[0]
        ins = (x, self._slice(kernel, axis, a, b)) + tuple(
            self._slice(c, 0, a, b) for c in bias
        )
        out = self.emit(node.prim, node.params, ins, out_shape, dtype, True)
      elif not node.etp:
        axis = _split_axis(node, self._shape(node.ins[0]))
        if axis is not None:
          offset = _split_offset(node, k)
          out = self.part(node.ins[0], offset + a, offset + b)
        elif self._commutes(node, shape):
          ins = tuple(self.part(x, a, b) for x in node.ins)
          out = self.emit(node.prim, node.params, ins, out_shape, dtype)
        elif (
            node.prim.name == "broadcast_in_dim"
            and len(self._shape(node.ins[0])) == 1
            and tuple(node.params["broadcast_dimensions"]) == (len(shape) - 1,)
        ):
          piece = self._slice(node.ins[0], 0, a, b)
          params = dict(node.params, shape=out_shape)
          out = self.emit(node.prim, params, (piece,), out_shape, dtype)
    if out is None:
      out = self._slice(v, len(shape) - 1, a, b)
    self._memo[key] = out
    return out


def _relation_kind(node: program_lib.Node) -> Optional[str]:
  if node.prim in (dense_lib.etp_batched_dense_p, dense_lib.etp_dense_p):
    return None if node.params.get("max_events") is not None else "dense"
  if node.prim is conv_lib.etp_conv_p:
    p = node.params
    dn = p["dimension_numbers"]
    if (
        isinstance(dn, lax.ConvDimensionNumbers)
        and p["feature_group_count"] == 1
        and dn.out_spec[1] == len(dn.out_spec) - 1
    ):
      return "conv"
  return None


def _split_axis(
    node: program_lib.Node, in_shape: tuple[int, ...]
) -> Optional[int]:
  """The last axis if ``node`` splits or slices its operand along it alone."""
  last = len(in_shape) - 1
  if node.etp or last < 0:
    return None
  if node.prim.name == "split" and node.params["axis"] == last:
    return last
  if node.prim.name == "slice" and node.params.get("strides") in (
      None,
      (1,) * len(in_shape),
  ):
    start, limit = node.params["start_indices"], node.params["limit_indices"]
    if all(start[i] == 0 and limit[i] == in_shape[i] for i in range(last)):
      return last
  return None


def _split_offset(node: program_lib.Node, k: int) -> int:
  if node.prim.name == "split":
    return int(sum(node.params["sizes"][:k]))
  return int(node.params["start_indices"][-1])


def split_relations(program: program_lib.Program) -> int:
  """Rewrites, in place, each last-axis split of values computed from dense
  or conv relations into per-part relations (:class:`_Parts`). Returns how
  many splits were rewritten."""
  parts = _Parts(program)
  subst: dict[int, program_lib.Atom] = {}
  nodes: list[program_lib.Node] = []
  count = 0
  for node in program.nodes:
    src = node.ins[0] if node.ins else None
    axis = (
        _split_axis(node, program_lib.shape(program.aval(src)))
        if src is not None and not isinstance(src, Lit)
        else None
    )
    if axis is None or not parts.reaches_relation(src):
      nodes.append(node)
      continue
    parts.emitted = []
    for k, o in enumerate(node.outs):
      size = program_lib.shape(program.avals[o])[-1]
      offset = _split_offset(node, k)
      subst[o] = parts.part(src, offset, offset + size)
    nodes.extend(parts.emitted)
    count += 1
  if not count:
    return 0

  def sub(a: program_lib.Atom) -> program_lib.Atom:
    return a if isinstance(a, Lit) else subst.get(a, a)

  for node in nodes:
    node.ins = tuple(sub(a) for a in node.ins)
  program.outvars[:] = [sub(a) for a in program.outvars]
  program.nodes[:] = nodes
  program_lib.drop_dead(program)
  return count


def bias_relations(program: program_lib.Program, num_params: int) -> int:
  """Makes a parameter broadcast along the last axis and added to (or
  subtracted from) a value that is not computed from parameters alone a
  relation: an identity ``etp_elementwise`` op on the parameter (its trace
  is the elementwise rule's). Returns how many were rewritten."""
  only = _param_only(program, num_params)
  producer = program_lib.producers(program)
  parts = _Parts(program)
  nodes: list[program_lib.Node] = []
  count = 0
  for node in program.nodes:
    if node.etp or node.prim.name not in ("add", "sub") or len(node.ins) != 2:
      nodes.append(node)
      continue
    ins = list(node.ins)
    for i, a in enumerate(ins):
      other = ins[1 - i]
      shape = program_lib.shape(program.aval(a))
      b = _broadcast_param(program, a, len(shape) - 1, only, producer)
      if b is None or isinstance(a, Lit) or isinstance(other, Lit):
        continue  # not a parameter broadcast, or added to a constant
      if other in only:
        continue  # parameters alone: not on the data's path
      bcast = program.nodes[producer[a]]
      parts.emitted = []
      rel = parts.emit(
          elementwise_lib.etp_elementwise_p,
          {"fn": None},
          (b,),
          program_lib.shape(program.aval(b)),
          program.aval(b).dtype,
          etp=True,
      )
      ins[i] = parts.emit(
          bcast.prim, bcast.params, (rel,), shape, program.avals[a].dtype
      )
      nodes.extend(parts.emitted)
      count += 1
    node.ins = tuple(ins)
    nodes.append(node)
  if count:
    program.nodes[:] = nodes
    program_lib.drop_dead(program)
  return count
