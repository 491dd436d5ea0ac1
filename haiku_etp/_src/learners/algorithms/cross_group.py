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
"""The cross-group traces of D-RTRL: init, roll and solve.

The compiler plans them (:mod:`~haiku_etp._src.compiler.cross_plan`); this module keeps
them in the learner state next to the per-group traces:

* ``"<relation>:<operand>@<group>"``: a full field ``(B, *param, *V, S)``,
  the derivative of a downstream group's state with respect to every entry
  of the relation's operand;
* ``"<relation>:<operand>@<group>/filtered"``: for a sink with one constant
  scalar leak, the relation's trace at the hop's input, filtered by that
  leak (the relation's own layout, one state);
* ``"<relation>@<group>/tail"``: that sink's (constant) tail Jacobian.

The hop's op enters only through its input Jacobian: rows of it (one per
downstream position, from a VJP) contract a field over the input's
positions, or, with the relation's own solve rule applied per sample, its
compact trace.
"""

from typing import Any, Optional

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.learners.algorithms import protocol
from haiku_etp._src.compiler import recording
from haiku_etp._src.compiler import compiler as compiler_lib
from haiku_etp._src.core import closed_form
from haiku_etp._src.core import primitive
from haiku_etp._src.core import program as program_lib


def full_label(
    rel: compiler_lib.Relation, operand: str, group: compiler_lib.HiddenGroup
) -> str:
  return f"{rel.key}:{operand}@{group.name}"


def filtered_label(
    rel: compiler_lib.Relation, operand: str, group: compiler_lib.HiddenGroup
) -> str:
  return f"{rel.key}:{operand}@{group.name}/filtered"


def tail_label(
    rel: compiler_lib.Relation, group: compiler_lib.HiddenGroup
) -> str:
  return f"{rel.key}@{group.name}/tail"


def _weight_avals(compiled: compiler_lib.CompiledStep, r: int) -> dict:
  rel = compiled.relations[r]
  node = compiled.program.nodes[rel.node]
  return {
      k: compiled.program.aval(node.ins[i])
      for k, i in rel.primitive.trainable_invars(rel.params).items()
  }


def _compact_init(
    compiled: compiler_lib.CompiledStep, r: int, pre_aval, dtype: Any
) -> dict:
  """Zero one-state traces of relation ``r`` over ``pre_aval``'s positions."""
  rel = compiled.relations[r]
  node = compiled.program.nodes[rel.node]
  xi = rel.primitive.x_invar_index
  x_aval = None if xi is None else compiled.program.aval(node.ins[xi])
  y_aval = jax.ShapeDtypeStruct(tuple(pre_aval.shape), dtype)
  return primitive.drtrl_init(
      rel.primitive, x_aval, y_aval, _weight_avals(compiled, r), 1, rel.params
  )


def init(compiled: compiler_lib.CompiledStep) -> dict:
  """Zero cross-group traces of every plan."""
  entries = {}
  for plan in compiled.cross:
    rel = compiled.relations[plan.relation]
    weights = _weight_avals(compiled, plan.relation)
    for g in plan.groups:
      group = compiled.groups[g]
      for k, w in weights.items():
        shape = (
            group.shape[:1]
            + tuple(w.shape)
            + group.shape[1:]
            + (group.num_states,)
        )  # pyformat: disable
        entries[full_label(rel, k, group)] = jnp.zeros(shape, group.dtype)
    for g, j in plan.filtered:
      group = compiled.groups[g]
      pre = compiled.program.aval(compiled.cross_inputs[j].pre)
      trace = _compact_init(compiled, plan.relation, pre, group.dtype)
      for k, v in trace.items():
        entries[filtered_label(rel, k, group)] = v
      entries[tail_label(rel, group)] = jnp.zeros(
          group.shape + (group.num_states,), group.dtype
      )
  return entries


def _op_of_pre(compiled: compiler_lib.CompiledStep, j: int, weights_j):
  """``pre -> y_j``: the hop relation's op after the chain of parameter-free
  linear ops that leads to its input (constants and bias included)."""
  program = compiled.program
  rel = compiled.relations[j]
  spec = compiled.cross_inputs[j]
  env: dict = {}
  read = lambda a: a.val if isinstance(a, program_lib.Lit) else env[a]
  for ni in spec.const_nodes:
    node = program.nodes[ni]
    values = program_lib.bind(node, [read(a) for a in node.ins])
    env.update(zip(node.outs, values))

  def f(pre):
    x = pre
    for ni, k in spec.chain:
      node = program.nodes[ni]
      args = [x if n == k else read(a) for n, a in enumerate(node.ins)]
      (x,) = program_lib.bind(node, args)
    return rel.primitive.bind_operands(x, weights_j, rel.params)

  return f


def input_rows(
    compiled: compiler_lib.CompiledStep, j: int, weights_j, pre_aval
) -> jax.Array:
  """Rows of the hop op's input Jacobian: ``(U, *pre[1:])`` for the ``U``
  positions of one sample's output (the op is the same for every sample)."""
  f = _op_of_pre(compiled, j, weights_j)
  pre = jnp.zeros(pre_aval.shape, pre_aval.dtype)
  y, pull = jax.vjp(f, pre)
  per_sample = int(np.prod(y.shape[1:]))

  def row(u):
    cot = jnp.zeros((per_sample,), y.dtype).at[u].set(1.0)
    cot = jnp.zeros_like(y).at[0].set(cot.reshape(y.shape[1:]))
    return pull(cot)[0][0]

  return lax.stop_gradient(jax.vmap(row)(jnp.arange(per_sample)))


def _per_sample_solve(
    rel: compiler_lib.Relation, trace: protocol.Traces, rows, weights: Any
):
  """``out[b, ..., u] = sum over positions of rows[u] * trace[b]``, per
  operand, with the relation's solve rule on one sample at a time."""

  def one(trace_b, row):
    return primitive.drtrl_solve(
        rel.primitive, trace_b, row[..., None], weights, rel.params
    )

  per_u = jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(None, 0))
  out = per_u(trace, rows)  # {k: (U, B, *param)}
  return {k: jnp.moveaxis(v, 0, -1) for k, v in out.items()}


def _contract_field(field, rows, num_pre: int):
  """``sum_v rows[u, v] field[b, ..., v]`` over the last ``num_pre`` axes."""
  axes = tuple(range(field.ndim - num_pre, field.ndim))
  return jnp.tensordot(field, rows, axes=(axes, tuple(range(1, num_pre + 1))))


def _state_column(c, bits, dtype: Any):
  """Stack per-state derivatives ``(*pre,)`` into ``(*pre, S)``; a state the
  input is no tail of contributes zeros (its paths are cut or followed by
  other hops)."""
  shape = next(iter(c.values())).shape
  return jnp.stack(
      [c[b].astype(dtype) if b in c else jnp.zeros(shape, dtype) for b in bits],
      axis=-1,
  )


def _group_bits(compiled: compiler_lib.CompiledStep, g: int) -> list:
  pos = {leaf: i for i, leaf in enumerate(compiled.hidden)}
  return [pos[leaf] for leaf in compiled.group_leaves(g)]


def _rel_bit(compiled: compiler_lib.CompiledStep, r: int) -> int:
  return len(compiled.hidden) + r


def _with_params(x: Any, num_param: int, lead: int = 1):
  """Insert ``num_param`` unit axes after the first ``lead`` axes."""
  return jnp.reshape(x, x.shape[:lead] + (1,) * num_param + x.shape[lead:])


def _compact_input(
    compiled: compiler_lib.CompiledStep,
    plan: Any,
    hop,
    entries: protocol.Traces,
    record: recording.StepRecord,
    weights: Any,
    fast: bool,
):
  """The source's compact trace at the hop's input (or ``None``)."""
  if not (hop.own_groups or hop.own_output):
    return None
  i = plan.relation
  rel = compiled.relations[i]
  c = record.c[hop.relation]
  pre_aval = compiled.program.aval(compiled.cross_inputs[hop.relation].pre)
  dtype = compiled.groups[(rel.groups or plan.groups)[0]].dtype
  out = None
  d_f = c[_rel_bit(compiled, i)] if hop.own_output else None
  for g in hop.own_groups or (None,):
    if g is None:
      trace = {
          k: jnp.zeros(v.shape, v.dtype)
          for k, v in _compact_init(compiled, i, pre_aval, dtype).items()
      }
      d = jnp.zeros(pre_aval.shape + (1, 1), dtype)
    else:
      group = compiled.groups[g]
      trace = {k: entries[f"{rel.key}:{k}@{group.name}"] for k in rel.weights}
      d = _state_column(c, _group_bits(compiled, g), dtype)[..., None, :]
    df = (
        jnp.zeros(pre_aval.shape + (1,), dtype)
        if d_f is None
        else d_f.astype(dtype)[..., None]
    )
    part = primitive.drtrl_update(
        rel.primitive,
        trace,
        d,
        df,
        record.x[i],
        weights[i],
        rel.params,
        fast=fast,
    )  # pyformat: disable
    out = part if out is None else {k: out[k] + part[k] for k in out}
    d_f = None  # the instantaneous term once
  return out


def _full_input(
    compiled: compiler_lib.CompiledStep,
    plan: Any,
    hop,
    old: protocol.Traces,
    fields_y,
    record: recording.StepRecord,
):
  """The downstream fields at the hop's input (or ``None``)."""
  rel = compiled.relations[plan.relation]
  c = record.c[hop.relation]
  out = None
  for g in hop.groups:
    group = compiled.groups[g]
    col = _state_column(c, _group_bits(compiled, g), group.dtype)
    for k in rel.weights:
      field = old[full_label(rel, k, group)]
      num_param = field.ndim - col.ndim
      part = jnp.sum(_with_params(col, num_param) * field, axis=-1)
      out = _add(out, {k: part})
  for r2 in hop.relations:
    col = c[_rel_bit(compiled, r2)]
    for k, field in fields_y[r2].items():
      num_param = field.ndim - col.ndim
      out = _add(out, {k: _with_params(col, num_param) * field})
  return out


def _add(a: Optional[dict], b: dict) -> dict:
  """Sum of two ``{operand: array}`` (keys of either; ``None`` is empty)."""
  if a is None:
    return dict(b)
  out = dict(a)
  for k, v in b.items():
    out[k] = out[k] + v if k in out else v
  return out


def roll(
    compiled: compiler_lib.CompiledStep,
    old: dict,
    new: dict,
    record: recording.StepRecord,
    weights: Any,
    fast: bool,
) -> dict:
  """The cross-group traces after one step.

  Args:
    compiled: the compiled step.
    old: the trace entries before the step (per-group traces included).
    new: the entries being built (updated in place and returned).
    record: the step's :class:`~haiku_etp._src.compiler.recording.StepRecord`.
    weights: the relations' operands.
    fast: use the primitives' fast paths.
  """
  for plan in compiled.cross:
    i = plan.relation
    rel = compiled.relations[i]
    fields = {}
    for g in plan.groups:
      group = compiled.groups[g]
      d = record.d[g]
      for k in rel.weights:
        field = old[full_label(rel, k, group)]
        num_param = field.ndim - d.ndim + 1
        mixed = primitive.mix_states(
            _with_params(d.astype(field.dtype), num_param), field
        )
        fields[(g, k)] = mixed
    fields_y: dict = {}
    for hop in plan.hops:
      j = hop.relation
      pre_aval = compiled.program.aval(compiled.cross_inputs[j].pre)
      rows = input_rows(compiled, j, weights[j], pre_aval)
      num_pre = len(pre_aval.shape) - 1
      compact = _compact_input(compiled, plan, hop, old, record, weights, fast)
      full = _full_input(compiled, plan, hop, old, fields_y, record)
      y_shape = compiled.relations[j].y_shape
      y: Optional[dict] = None
      if compact is not None:
        y = _add(y, _per_sample_solve(rel, compact, rows, weights[i]))
      if full is not None:
        y = _add(
            y, {k: _contract_field(v, rows, num_pre) for k, v in full.items()}
        )  # pyformat: disable
      assert y is not None  # a hop has a compact or a full input
      y = {
          k: v.reshape(v.shape[:-1] + tuple(y_shape[1:])) for k, v in y.items()
      }
      fields_y[j] = y
      for n, g in enumerate(compiled.relations[j].groups):
        group = compiled.groups[g]
        d_f = record.d_f[j][n]
        if g in plan.groups:
          for k, v in y.items():
            num_param = v.ndim - d_f.ndim + 1
            fields[(g, k)] = (
                fields[(g, k)]
                + _with_params(d_f.astype(v.dtype), num_param) * v[..., None]
            )
        elif (g, j) in plan.filtered:
          kappa = jnp.reshape(record.d[g], (-1,))[0]
          for k, v in compact.items():
            label = filtered_label(rel, k, group)
            new[label] = (kappa * old[label] + v).astype(old[label].dtype)
          label = tail_label(rel, group)
          new[label] = d_f.astype(old[label].dtype)
    for (g, k), v in fields.items():
      label = full_label(rel, k, compiled.groups[g])
      new[label] = v.astype(old[label].dtype)
  return new


def solve(
    compiled: compiler_lib.CompiledStep,
    entries: dict,
    signals: list,
    weights: Any,
) -> dict:
  """``{relation: {operand: gradient}}`` of the cross-group traces."""
  out = {}
  for plan in compiled.cross:
    i = plan.relation
    rel = compiled.relations[i]
    total = None
    for g in plan.groups:
      group, sig = compiled.groups[g], signals[g]
      for k in rel.weights:
        field = entries[full_label(rel, k, group)]
        num_param = field.ndim - sig.ndim
        axes_f = (0,) + tuple(range(1 + num_param, field.ndim))
        part = jnp.tensordot(
            field,
            sig.astype(field.dtype),
            axes=(axes_f, tuple(range(sig.ndim))),
        )  # pyformat: disable
        total = _add(total, {k: part})
    for g, j in plan.filtered:
      group = compiled.groups[g]
      tail = entries[tail_label(rel, group)]
      g_y = jnp.sum(signals[g].astype(tail.dtype) * tail, axis=-1)
      pre_aval = compiled.program.aval(compiled.cross_inputs[j].pre)
      f = _op_of_pre(compiled, j, weights[j])
      _, pull = jax.vjp(f, jnp.zeros(pre_aval.shape, pre_aval.dtype))
      (g_pre,) = pull(g_y.astype(pre_aval.dtype))
      trace = {k: entries[filtered_label(rel, k, group)] for k in rel.weights}
      solved = primitive.drtrl_solve(
          rel.primitive, trace, g_pre[..., None], weights[i], rel.params
      )
      total = _add(total, solved)
    out[i] = total
  return out


# --------------------------------------------------------------------------
# A whole window in closed form.
#
# Per step, every cross-group trace of a plan is linear in the source's own
# traces before the step, the fields before the step and the instantaneous
# term ``q (x) x^t`` of the source: the operators act on the output side
# only (positions and states), the parameter axes ride along. The roll with
# the parameter axes taken out is one linear map of output-sized values;
# its transpose, run backwards over the window (a filtered trace position
# by position, full fields with one seed per field coordinate), gives every
# coefficient of the closed form ``E^{e+k} = Phi^F E^e + Gamma eps^e +
# sum_t G_t (x) x^t`` (``docs/design.md``, "The closed-form window roll").


def _own_shape(compiled: compiler_lib.CompiledStep, plan: Any):
  """The shape of the source's instantaneous coefficient: its own groups'
  positions and the hop inputs it reaches directly must agree."""
  rel = compiled.relations[plan.relation]
  shapes = {tuple(compiled.groups[g].shape) for g in rel.groups}
  for hop in plan.hops:
    if hop.own_output or hop.own_groups:
      pre = compiled.program.aval(compiled.cross_inputs[hop.relation].pre)
      shapes.add(tuple(pre.shape))
  return shapes.pop() if len(shapes) == 1 else None


def window_obstacle(compiled: compiler_lib.CompiledStep, plan: Any) -> str:
  """Why ``plan``'s traces cannot take the closed-form window roll (``""``
  when they can)."""
  rel = compiled.relations[plan.relation]
  prim = rel.primitive
  has_input = prim.x_invar_index is not None
  if has_input and (not prim.batched or prim.batch_axes(rel.params) is None):
    return (
        f"the source op {prim.name} has no batch axis of its own to keep "
        "per sample"
    )
  if _own_shape(compiled, plan) is None:
    return (
        "the source's own groups and the hop inputs it reaches have "
        "different shapes"
    )
  return ""


def _elements(shape) -> int:
  return int(np.prod(shape))


def fields_per_step(compiled: compiler_lib.CompiledStep) -> str:
  """Why full cross-group fields are better rolled step by step (``""``
  when the closed form costs less, or there are none).

  Per step, rolling a plan's fields carries each of its ``P`` parameters'
  columns through the hops into the downstream groups; the closed form's
  backward recursion carries one column per field coordinate (its seeds)
  instead, shared by the plans with one signature (:func:`_fields_signature`),
  and contracts once per window. Both pay the same per column: the hops'
  linear maps and the groups' blocks. So the per-step roll is kept where
  the parameters of the plans with fields are fewer than their seeds.
  """
  params = seeds = 0
  seen = set()
  for plan in compiled.cross:
    if not plan.groups:
      continue
    rel = compiled.relations[plan.relation]
    per_column = sum(
        _elements(compiled.groups[g].shape) * compiled.groups[g].num_states ** 2
        for g in tuple(rel.groups) + tuple(plan.groups)
    ) + compiled.groups[plan.groups[0]].shape[0] * sum(
        _elements(a.shape)
        for hop in plan.hops
        for a in _weight_avals(compiled, hop.relation).values()
    )
    params += per_column * sum(
        _elements(a.shape)
        for a in _weight_avals(compiled, plan.relation).values()
    )
    signature = _fields_signature(compiled, plan)
    if signature not in seen:
      seen.add(signature)
      num = len(plan.filtered) + sum(
          _elements(compiled.groups[g].shape[1:])
          * compiled.groups[g].num_states
          for g in plan.groups
      )
      seeds += per_column * num
  if params and params <= seeds:
    return (
        "full cross-group fields whose parameters are fewer than their "
        "field coordinates: rolling them step by step carries fewer "
        "columns through the hops than the closed form's backward recursion"
    )
  return ""


def _plus(a, b):
  """``a + b`` where either may be ``None`` (nothing)."""
  if a is None or b is None:
    return b if a is None else a
  return a + b


def _filtered_recursion(
    compiled: compiler_lib.CompiledStep, plan: Any, m: int
) -> closed_form.Backward:
  """The backward recursion of ``plan``'s ``m``-th filtered trace.

  Its roll is ``f^t = kappa_t f^{t-1} + sum_a <C_a^t, own_a^{t-1}> + c^t
  q^t`` (per position), so its coefficients come from ``lam_f <- kappa_t
  lam_f`` (from 1) and, per own group, ``lam_a <- D_a^{tT} lam_a + C_a^t
  lam_f`` (from 0); step ``t``'s source term has ``sum_a <D_{f,a}^t,
  lam_a> + c^t lam_f`` with both taken after the step. The carry before
  the window is the entry's coefficients ``(lam_a, lam_f)``.
  """
  i = plan.relation
  rel = compiled.relations[i]
  g_f, j = plan.filtered[m]
  hop = next(h for h in plan.hops if h.relation == j)
  dtype = compiled.groups[g_f].dtype
  own = [(n, a) for n, a in enumerate(rel.groups) if a in hop.own_groups]
  shape = lambda a: tuple(compiled.groups[a].shape) + (
      compiled.groups[a].num_states,
  )
  q_shape = _own_shape(compiled, plan)

  def step(carry, rec):
    lam_own, lam_f = carry
    c = rec.c[j]
    on_q = jnp.zeros(q_shape, dtype)
    if hop.own_output:
      on_q = on_q + c[_rel_bit(compiled, i)].astype(dtype) * lam_f
    new_own = {}
    for n, a in own:
      on_q = on_q + primitive.weighted_state_sum(
          rec.d_f[i][n].astype(dtype), lam_own[a]
      )
      col = _state_column(c, _group_bits(compiled, a), dtype)
      new_own[a] = (
          closed_form.mix_blocks(
              closed_form.transpose_blocks(rec.d[a].astype(dtype)), lam_own[a]
          )
          + col * lam_f
      )
    kappa = jnp.reshape(rec.d[g_f], (-1,))[0].astype(dtype)
    return (new_own, kappa * lam_f), on_q

  init = ({a: jnp.zeros(shape(a), dtype) for _, a in own}, jnp.ones((), dtype))
  return closed_form.Backward(init, step)


def _fields_signature(compiled: compiler_lib.CompiledStep, plan: Any) -> tuple:
  """What the backward recursion of ``plan``'s fields depends on: its own
  groups and its hops, downstream groups and filtered sinks (plans that
  agree share one recursion; what each source adds itself, its tail
  Jacobians and same-step hop derivatives, enters afterwards)."""
  rel = compiled.relations[plan.relation]
  hops = tuple(
      (h.relation, h.own_groups, h.groups, h.relations, h.fed)
      for h in plan.hops
  )
  return (tuple(rel.groups), hops, plan.groups, plan.filtered)


def _hop_transposes(
    compiled: compiler_lib.CompiledStep, plan: Any, weights: Any
) -> dict:
  """Per hop, the transpose of its linear map ``pre -> y`` (a bias left
  out), for a learning signal ``(B, *y[1:])``."""
  out = {}
  for hop in plan.hops:
    j = hop.relation
    f = _op_of_pre(compiled, j, lax.stop_gradient(weights[j]))
    pre = compiled.program.aval(compiled.cross_inputs[j].pre)
    zero = jnp.zeros(pre.shape, pre.dtype)
    linear = lambda v, f=f, zero=zero: jax.jvp(f, (zero,), (v,))[1]
    out[j] = jax.linear_transpose(linear, zero)
  return out


def _fields_recursion(
    compiled: compiler_lib.CompiledStep, plan: Any, weights: Any
) -> closed_form.Backward:
  """The backward recursion of a plan with full fields, one seed per field
  coordinate (a one-hot, the same for every sample) and per filtered trace
  (ones), the seeds after the batch axis of every array.

  The parameter-free roll of the plan's traces is linear in its own
  traces, fields and filtered traces before each step and in what enters
  each step: ``u_a`` into own group ``a`` (there ``D_{f,a} q``) and ``v_j``
  into hop ``j``'s input (there ``c_j q``). Its transpose, run from the
  window's end, carries the seeds' coefficients on the traces (the carry:
  ``(own, fields, filtered)``) and gives, per step, those on ``u_a`` and
  ``v_j`` (the outputs), from which each source's coefficient on its step
  term follows (:func:`_plan_window`).
  """
  rel = compiled.relations[plan.relation]
  dtype = compiled.groups[plan.groups[0]].dtype
  batch = compiled.groups[plan.groups[0]].shape[0]
  state = lambda g: tuple(compiled.groups[g].shape) + (
      compiled.groups[g].num_states,
  )
  offsets, n = {}, len(plan.filtered)
  for g in plan.groups:
    offsets[g] = n
    n += _elements(state(g)[1:])
  transposes = _hop_transposes(compiled, plan, weights)
  pre_shape = lambda j: tuple(
      compiled.program.aval(compiled.cross_inputs[j].pre).shape
  )
  filtered_of: dict[int, list[int]] = {}
  for m, (_, j) in enumerate(plan.filtered):
    filtered_of.setdefault(j, []).append(m)
  # The seeds follow the batch axis: a step's record (B, ...) broadcasts.
  seeded = lambda v: jnp.expand_dims(v.astype(dtype), 1)
  transpose = lambda d: seeded(closed_form.transpose_blocks(d))

  def step(carry, rec):
    lam_own, lam_fields, lam_filtered = carry
    new_own = {
        a: closed_form.mix_blocks(transpose(rec.d[a]), v)
        for a, v in lam_own.items()
    }
    new_fields = {
        g: closed_form.mix_blocks(transpose(rec.d[g]), v)
        for g, v in lam_fields.items()
    }
    new_filtered = {
        m: jnp.reshape(rec.d[g], (-1,))[0].astype(dtype) * lam_filtered[m]
        for m, (g, _) in enumerate(plan.filtered)
    }
    lam_pre: dict = {}
    on_hop: dict = {}
    for hop in reversed(plan.hops):
      j = hop.relation
      lam_y = None
      for n_j, g in enumerate(compiled.relations[j].groups):
        if g in lam_fields:
          part = primitive.weighted_state_sum(
              seeded(rec.d_f[j][n_j]), lam_fields[g]
          )
          lam_y = _plus(lam_y, part)
      for later in plan.hops:
        if later.relation in lam_pre and j in later.relations:
          c = seeded(rec.c[later.relation][_rel_bit(compiled, j)])
          lam_y = _plus(lam_y, c * lam_pre[later.relation])
      if lam_y is None:
        pre = jnp.zeros((batch, n) + pre_shape(j)[1:], dtype)
      else:
        (pre,) = jax.vmap(transposes[j], in_axes=1, out_axes=1)(lam_y)
      lam_pre[j] = pre
      compact = pre
      for m in filtered_of.get(j, ()):
        compact = compact + lam_filtered[m]
      on_hop[j] = compact
      c = rec.c[j]
      for a in hop.own_groups:
        col = seeded(_state_column(c, _group_bits(compiled, a), dtype))
        new_own[a] = new_own[a] + col * compact[..., None]
      for g in hop.groups:
        col = seeded(_state_column(c, _group_bits(compiled, g), dtype))
        new_fields[g] = new_fields[g] + col * pre[..., None]
    return (new_own, new_fields, new_filtered), (lam_own, on_hop)

  seeds_first = lambda shape: (batch, n) + tuple(shape[1:])
  own = {a: jnp.zeros(seeds_first(state(a)), dtype) for a in rel.groups}
  fields = {}
  for g in plan.groups:
    size = _elements(state(g)[1:])
    eye = jnp.eye(size, dtype=dtype).reshape((1, size) + state(g)[1:])
    eye = jnp.broadcast_to(eye, (batch, size) + state(g)[1:])
    fields[g] = (
        jnp.zeros(seeds_first(state(g)), dtype)
        .at[:, offsets[g] : offsets[g] + size]
        .set(eye)
    )
  filtered = {
      m: jnp.zeros(seeds_first(pre_shape(j)), dtype).at[:, m].set(1.0)
      for m, (_, j) in enumerate(plan.filtered)
  }
  return closed_form.Backward((own, fields, filtered), step)


def window_recursions(
    compiled: compiler_lib.CompiledStep, weights: Any
) -> dict:
  """The backward recursions of the cross-group traces: per plan without
  full fields, one per filtered trace (``("filtered", plan, m)``); per
  signature of plans with fields, one shared (``("fields", signature)``,
  :func:`_fields_signature`)."""
  out: dict[tuple, Any] = {}
  for p, plan in enumerate(compiled.cross):
    if plan.groups:
      key = ("fields", _fields_signature(compiled, plan))
      if key not in out:
        out[key] = _fields_recursion(compiled, plan, weights)
      continue
    for m in range(len(plan.filtered)):
      out[("filtered", p, m)] = _filtered_recursion(compiled, plan, m)
  return out


def _plan_window(
    compiled: compiler_lib.CompiledStep,
    p: int,
    old: protocol.Traces,
    new,
    records: recording.StepRecord,
    weights: Any,
    fast: bool,
    coefficients: Any,
) -> None:
  """Writes plan ``p``'s traces after the window into ``new``
  (``coefficients``: :func:`window_recursions`' results)."""
  plan = compiled.cross[p]
  i = plan.relation
  rel = compiled.relations[i]
  prim = rel.primitive
  dtype = compiled.groups[(rel.groups or plan.groups)[0]].dtype
  q_shape = _own_shape(compiled, plan)
  if plan.groups:
    key = ("fields", _fields_signature(compiled, plan))
    (on_own, on_fields, on_filtered), (own_steps, hop_steps) = coefficients[key]
    # This source's coefficient on its step term: through its tail into
    # its own groups and, same step, through the hops it feeds directly.
    on_q: Any = None  # (k, B, seeds, *q[1:])
    for n_a, a in enumerate(rel.groups):
      d_f = jnp.expand_dims(records.d_f[i][n_a].astype(dtype), 2)
      on_q = _plus(on_q, primitive.weighted_state_sum(d_f, own_steps[a]))
    for hop in plan.hops:
      if hop.own_output:
        c = records.c[hop.relation][_rel_bit(compiled, i)].astype(dtype)
        on_q = _plus(on_q, jnp.expand_dims(c, 2) * hop_steps[hop.relation])
    offsets, n = {}, len(plan.filtered)
    for g in plan.groups:
      offsets[g] = n
      n += _elements(compiled.groups[g].shape[1:]) * (
          compiled.groups[g].num_states
      )
    filtered_coefficients = lambda m: (
        on_filtered[m][:, m],
        {a: on_own[a][:, m] for a in rel.groups},
        on_q[:, :, m],
    )
  else:
    # Filtered traces alone: position by position, no seeds over fields.
    def filtered_coefficients(m: int):
      (on_own, on_entry), on_q = coefficients[("filtered", p, m)]
      return on_entry, on_own, on_q

  xs = records.x[i]
  own_traces = {
      g: {
          key: old[full_label(rel, key, compiled.groups[g])]
          for key in rel.weights
      }
      for g in rel.groups
  }  # pyformat: disable  (own traces share the full label's spelling)

  for m, (g, j) in enumerate(plan.filtered):
    group = compiled.groups[g]
    trace = {key: old[filtered_label(rel, key, group)] for key in rel.weights}
    on_entry, on_own_m, on_q_m = filtered_coefficients(m)
    total = primitive.drtrl_window(
        prim,
        trace,
        jnp.broadcast_to(on_entry, q_shape)[..., None, None],
        on_q_m[..., None],
        xs,
        weights[i],
        rel.params,
        fast=fast,
    )
    for a, coefficient in on_own_m.items():
      mixed = primitive.drtrl_mix(
          prim, own_traces[a], coefficient[..., None, :], rel.params
      )
      total = {key: total[key] + mixed[key] for key in total}
    for name, v in total.items():
      label = filtered_label(rel, name, group)
      new[label] = v.astype(old[label].dtype)
    n_j = compiled.relations[j].groups.index(g)
    label = tail_label(rel, group)
    new[label] = records.d_f[j][n_j][-1].astype(old[label].dtype)

  # The full fields: one seed per coordinate, laid out last like the
  # fields' own positions and states.
  for g in plan.groups:
    group = compiled.groups[g]
    size = int(np.prod(group.shape[1:])) * group.num_states
    seeds = slice(offsets[g], offsets[g] + size)
    parts = _field_terms(
        rel, own_traces, on_own, on_q, seeds, xs, weights[i], fast
    )
    if not any(hop.groups for hop in plan.hops):
      # No field feeds another: each field moves by its group's blocks.
      phi, _ = coefficients[("group", g)]
    for key in rel.weights:
      label = full_label(rel, key, group)
      field = old[label]
      value = parts[key].astype(field.dtype)
      num_param = value.ndim - 2
      if not any(hop.groups for hop in plan.hops):
        moved = primitive.mix_states(
            _with_params(phi.astype(field.dtype), num_param), field
        )
        new[label] = value.reshape(field.shape) + moved
        continue
      for g2 in plan.groups:
        entry = old[full_label(rel, key, compiled.groups[g2])]
        flat = entry.reshape(entry.shape[: 1 + num_param] + (-1,))
        coefficient = on_fields[g2][:, seeds].reshape(
            (flat.shape[0], size, flat.shape[-1])
        )
        value = value + jnp.einsum(
            "b...v,buv->b...u", flat, coefficient.astype(flat.dtype)
        )
      new[label] = value.reshape(field.shape)


def _field_terms(
    rel: compiler_lib.Relation,
    own_traces,
    on_own,
    on_q,
    seeds,
    xs: Any,
    weights: Any,
    fast: bool,
):
  """``{operand: (B, *param, seeds)}``: a field's terms from the own traces
  at the entry and from the window's step terms (``on_q`` ``(k, B, seeds,
  *q[1:])``), the seeds last."""
  prim = rel.primitive
  parts = None
  for a, trace in own_traces.items():
    one = lambda trace_b, g_b: primitive.drtrl_solve(
        prim, trace_b, g_b, weights, rel.params, fast=fast
    )
    per_seed = jax.vmap(jax.vmap(one, in_axes=(None, 0), out_axes=-1))
    parts = _plus_dict(parts, per_seed(trace, on_own[a][:, seeds]))
  q = on_q[:, :, seeds]
  if prim.name == "etp_batched_dense" and xs is not None and xs.ndim == 3:
    # The steps are the contracted axis of one batched matmul.
    term = {"weight": jnp.einsum("tbi,tbno->bion", xs.astype(q.dtype), q)}
    if rel.params["has_bias"]:
      term["bias"] = jnp.moveaxis(jnp.sum(q, axis=0), 1, -1)
  else:
    term = jax.vmap(
        lambda c: primitive.summed_dw_per_sample(
            prim, xs, c, weights, rel.params
        ),
        in_axes=2,
        out_axes=-1,
    )(q)
  return _plus_dict(parts, term)


def _plus_dict(a, b):
  """``a + b`` of ``{operand: array}`` (``None`` is nothing)."""
  return b if a is None else {k: a[k] + b[k] for k in a}


def roll_window(
    compiled: compiler_lib.CompiledStep,
    old: dict,
    new: dict,
    records: recording.StepRecord,
    weights: Any,
    fast: bool,
    coefficients: Any,
) -> dict:
  """The cross-group traces after a window, in closed form (``records`` are
  the window's, stacked; every plan's :func:`window_obstacle` is empty;
  ``coefficients`` holds the results of :func:`window_recursions`)."""
  for p in range(len(compiled.cross)):
    _plan_window(compiled, p, old, new, records, weights, fast, coefficients)
  return new
