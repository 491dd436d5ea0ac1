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
"""One step of a compiled model with its D, D_f and relation inputs.

The step runs through the compiler's flat program, binding the same
primitives as ``model.apply`` (custom derivatives included). The Jacobians
come from forward-mode derivatives of a *cut* copy of the step, where every
ETP output and every mixing op is held constant:

* ``D[g][..., a, b]``: tangent of the new state ``a`` of group ``g`` when the
  old state ``b`` of ``g`` moves by one at every position;
* ``D_f[r][g][..., a]``: tangent of the new state ``a`` when relation ``r``'s
  output moves by one at every position.

Only the tail ops are recomputed for the cut copy; every other value comes
from the forward pass. All of it is gradient-stopped.
"""

import math
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import haiku as hk
import jax
from jax import lax
from jax import tree_util
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.core import backend
from haiku_etp._src.compiler import compiler as compiler_lib
from haiku_etp._src.core import program as program_lib
from haiku_etp._src.core import state as state_lib

Lit = program_lib.Lit
_bind = program_lib.bind


class StepRecord(NamedTuple):
  """What the trace rules need from one step.

  Attributes:
    x: per relation, its input ``x_t`` (``None`` for input-free ops).
    d: per group, the blocks ``(*V, S, S)``.
    d_f: per relation, per fed group (in ``relation.groups`` order), the tail
      Jacobian ``(*V, S)``.
    c: per relation, for the hop relations of the cross-group plans, the
      per-position derivatives of its input (read before any reshape) with
      respect to each source it is a tail of: ``{source bit: (*pre,)}``
      (hidden bits first, then relation bits); ``None`` elsewhere.
  """

  x: tuple
  d: tuple
  d_f: tuple
  c: tuple = ()
  full: Any = None
  replay: Any = None
  projection: Any = None


class FullJacobian(NamedTuple):
  """Per sample, the whole Jacobians of one step (RTRL's record).

  Hidden values are flattened per sample in the model state's leaf order
  (:func:`flat_hidden`), ``H`` of them.

  Attributes:
    hidden: ``(B, H, H)``, ``d h_t / d h_{t-1}`` across every group and
      position.
    params: ``{parameter path: (B, H, n)}``, ``d h_t / d theta`` with the
      old hidden state held (``n`` the parameter's size); ``None`` in the
      relation form.
    relations: the relation form (``None`` otherwise): per relation,
      ``d h_t / d y_r`` ``(B, H, *y.shape[1:])``, every path but through
      the relation's own operands (:func:`relation_jacobian`); with the
      record's inputs ``x`` they give ``d h_t / d theta`` as one rank-one
      product per relation.
  """

  hidden: jax.Array
  params: Optional[dict]
  relations: Optional[dict] = None


def _custom_vjp_forward(node: program_lib.Node, vals: Sequence[Any]) -> Any:
  """Binds a ``custom_vjp`` call so forward mode sees its custom derivative.

  JAX refuses forward mode through ``custom_vjp``. The compiler lets tails
  through such a call only for inputs of the output's shape whose VJP keeps
  positions (other inputs are held constant here), so the Jacobian of each
  such pair is diagonal and one VJP with a cotangent of ones per output
  recovers it; the tangent is that diagonal times the input tangent.
  """
  fn = lambda *args: _bind(node, args)

  @jax.custom_jvp
  def call(*args: Any) -> Any:
    return fn(*args)

  @call.defjvp
  def _(
      primals: Sequence[Any], tangents: Sequence[Any]
  ) -> tuple[Any, list[jax.Array]]:
    outs, vjp = jax.vjp(fn, *primals)
    tangent_outs = []
    for k, out in enumerate(outs):
      cot = [jnp.zeros_like(o) for o in outs]
      cot[k] = jnp.ones_like(out)
      diag = vjp(cot)
      t = jnp.zeros_like(out)
      for d, dx in zip(diag, tangents):
        if dx.dtype != jax.dtypes.float0 and jnp.shape(dx) == jnp.shape(out):
          t = t + (d * dx).astype(out.dtype)
      tangent_outs.append(t)
    return outs, tangent_outs

  return call(*vals)


def _read(env: dict[int, Any], atom: program_lib.Atom) -> Any:
  return atom.val if isinstance(atom, Lit) else env[atom]


def check_tree(
    compiled: compiler_lib.CompiledStep,
    params: hk.Params,
    state: hk.State,
    rng: Optional[jax.Array],
    x: Any,
) -> list[Any]:
  leaves, tree = tree_util.tree_flatten((params, state, rng, x))
  if tree != compiled.in_tree:
    raise ValueError(
        "The (params, state, rng, x) structure differs from the one the step "
        f"was compiled for.\n  got:      {tree}\n  expected: {compiled.in_tree}"
    )
  return leaves


def run_step(
    compiled: compiler_lib.CompiledStep,
    params: hk.Params,
    state: hk.State,
    rng: Optional[jax.Array],
    x: Any,
    *,
    jacobians: bool = True,
    probes: Optional[dict] = None,
    cut_inputs: frozenset = frozenset(),
    feedback: Optional[dict] = None,
) -> tuple[Any, Any, StepRecord]:
  """Runs one step; returns ``(out, new_state, record)``.

  With ``probes``, a probe is added to each listed relation's output and
  those relations' trainable operands are gradient-stopped; the inputs of
  the relations in ``cut_inputs`` are gradient-stopped too. A VJP of the
  step then gives, at each probe, ``dL/dy`` of that relation's output
  through every path inside the step but those inputs, without the
  relation's own weight gradient.

  Args:
    compiled: the step's :class:`~haiku_etp.CompiledStep`.
    params: parameters.
    state: model state (no learner entries).
    rng: rng or ``None``, as at compile time.
    x: the step's input.
    jacobians: also compute ``D`` and ``D_f``; without, the record holds
      only the relation inputs.
    probes: ``{relation index: array of its output's shape}`` (zeros).
    cut_inputs: relation indices whose input is gradient-stopped.
    feedback: ``{relation index: B}``: the relation is bound twice, on the
      gradient-stopped input with its own operands and on the input with
      ``B`` in place of the trainable operand of ``B``'s shape, and the
      second is subtracted at its forward value. The output is unchanged,
      the operands' gradients are unchanged, and the input's cotangent comes
      through ``B`` (e-prop's and RFLO's feedback).

  Returns:
    The step's output, its new model state, and the record.
  """
  probes = probes or {}
  feedback = feedback or {}
  program = compiled.program
  leaves = check_tree(compiled, params, state, rng, x)
  env = dict(zip(program.invars, leaves))
  touched = {
      compiled.relations[r].node: r for r in (*probes, *cut_inputs, *feedback)
  }
  sg = lax.stop_gradient
  for ni, node in enumerate(program.nodes):
    vals = [_read(env, a) for a in node.ins]
    r = touched.get(ni)
    if r is not None:
      rel = compiled.relations[r]
      if r in probes:
        for i in rel.primitive.trainable_invars(rel.params).values():
          vals[i] = sg(vals[i])
      if r in cut_inputs:
        xi = rel.primitive.x_invar_index
        vals[xi] = sg(vals[xi])
    if r is not None and r in feedback:
      outs = _feedback_bind(node, vals, compiled, r, feedback[r])
    else:
      outs = list(_bind(node, vals))
    if r in probes:
      outs[0] = outs[0] + probes[r].astype(outs[0].dtype)
    for o, v in zip(node.outs, outs):
      env[o] = v
  out, new_state = tree_util.tree_unflatten(
      compiled.out_tree, [_read(env, a) for a in program.outvars]
  )
  if jacobians:
    return out, new_state, _jacobians(compiled, env)
  return out, new_state, StepRecord(_relation_inputs(compiled, env), (), ())


def operand_shapes(compiled: compiler_lib.CompiledStep, r: int) -> dict:
  """``{name: shape}`` of relation ``r``'s trainable operands."""
  rel = compiled.relations[r]
  node = compiled.program.nodes[rel.node]
  return {
      k: tuple(compiled.program.aval(node.ins[i]).shape)
      for k, i in rel.primitive.trainable_invars(rel.params).items()
  }


def operand_dtype(
    compiled: compiler_lib.CompiledStep, r: int, name: str
) -> np.dtype:
  """The dtype of relation ``r``'s trainable operand ``name``."""
  rel = compiled.relations[r]
  node = compiled.program.nodes[rel.node]
  i = rel.primitive.trainable_invars(rel.params)[name]
  return compiled.program.aval(node.ins[i]).dtype


def feedback_operand(
    compiled: compiler_lib.CompiledStep, r: int, shape: Sequence[int]
) -> str:
  """The name of relation ``r``'s trainable operand that a feedback matrix
  of ``shape`` stands in for (the first of that shape).

  Raises:
    ValueError: when no trainable operand has that shape.
  """
  shapes = operand_shapes(compiled, r)
  for name, s in shapes.items():
    if s == tuple(shape):
      return name
  raise ValueError(
      f"relation {compiled.relations[r].key} has no trainable operand of "
      f"shape {tuple(shape)} for a feedback matrix; its operands are "
      f"{shapes}."
  )


def _feedback_bind(
    node: program_lib.Node,
    vals: Sequence[Any],
    compiled: compiler_lib.CompiledStep,
    r: int,
    matrix: jax.Array,
) -> list:
  """``op(sg(x), W) + op(x, B) - sg(op(x, B))``: the forward value of
  ``op(x, W)``, the operands' gradients of it, the input's through ``B``."""
  sg = lax.stop_gradient
  rel = compiled.relations[r]
  trainable = rel.primitive.trainable_invars(rel.params)
  xi = rel.primitive.x_invar_index
  main = list(vals)
  main[xi] = sg(main[xi])
  side = list(vals)
  for name, i in trainable.items():
    side[i] = sg(side[i])
  side[trainable[feedback_operand(compiled, r, jnp.shape(matrix))]] = sg(
      matrix.astype(vals[xi].dtype)
  )
  outs = list(_bind(node, main))
  through = _bind(node, side)[0]
  outs[0] = outs[0] + (through - sg(through))
  return outs


def recurrent_relations(compiled: compiler_lib.CompiledStep) -> frozenset:
  """Relations on a recurrent path whose input is a function of old state.

  Such a relation's output reaches new hidden state, and its input is a
  function of old hidden state that no relation output of the step reaches
  (a recurrent weight on ``h_{t-1}``: the path the transition ``D`` cuts).
  A GRU's ``r * h_{t-1}`` is not one (the reset gate's credit flows through
  it), nor is a readout of old state that feeds no hidden state.
  """
  program = compiled.program
  num_h = len(compiled.hidden)
  rel_bits = {
      id(program.nodes[rel.node]): 1 << (num_h + r)
      for r, rel in enumerate(compiled.relations)
  }
  deps = program_lib.dependencies(
      program,
      {
          compiled.hidden_in(leaf): 1 << k
          for k, leaf in enumerate(compiled.hidden)
      },
      rel_bits,
  )
  reach = 0
  for leaf in compiled.hidden:
    out = compiled.hidden_out(leaf)
    reach |= 0 if isinstance(out, Lit) else deps.get(out, 0)
  found = set()
  for r, rel in enumerate(compiled.relations):
    xi = rel.primitive.x_invar_index
    if xi is None or not reach >> (num_h + r) & 1:
      continue
    a = program.nodes[rel.node].ins[xi]
    d = 0 if isinstance(a, Lit) else deps.get(a, 0)
    if d and not d >> num_h:
      found.add(r)
  return frozenset(found)


def _relation_inputs(
    compiled: compiler_lib.CompiledStep, env: dict[int, Any]
) -> tuple:
  """Per relation, its gradient-stopped input (``None`` when input-free)."""
  xs = []
  for rel in compiled.relations:
    xi = rel.primitive.x_invar_index
    node = compiled.program.nodes[rel.node]
    xs.append(
        None if xi is None else lax.stop_gradient(_read(env, node.ins[xi]))
    )
  return tuple(xs)


def _cut_step(
    compiled: compiler_lib.CompiledStep, env: dict[int, Any], fed: Sequence[int]
) -> tuple[Callable[..., list[Any]], tuple[list[jax.Array], list[jax.Array]]]:
  """The step from old hidden values and relation deltas to new hidden values
  (and the cross-group hops' inputs), with every ETP output and every cut
  held at its forward value."""
  program = compiled.program
  sg = lax.stop_gradient
  h_ids = [compiled.hidden_in(leaf) for leaf in compiled.hidden]
  y_ids = [program.nodes[compiled.relations[r].node].outs[0] for r in fed]
  delta_of = {y: k for k, y in enumerate(y_ids)}
  order = sorted(
      set(compiled.tangent_nodes) | {compiled.relations[r].node for r in fed}
  )
  constant = lambda a: a.val if isinstance(a, Lit) else sg(env[a])

  def cut(
      h_olds: Sequence[jax.Array], deltas: Sequence[jax.Array]
  ) -> list[Any]:
    env2 = dict(zip(h_ids, h_olds))
    read = (
        lambda a: env2[a]
        if not isinstance(a, Lit) and a in env2
        else (constant(a))
    )
    for ni in order:
      node = program.nodes[ni]
      if node.etp:
        y = node.outs[0]
        env2[y] = sg(env[y]) + deltas[delta_of[y]]
        continue
      vals = [
          read(a) if program_lib.row_keeps(row) else constant(a)
          for a, row in zip(node.ins, node.flows)
      ]
      if node.prim.name in program_lib.CUSTOM_VJP:
        outs = _custom_vjp_forward(node, vals)
      else:
        outs = _bind(node, vals)
      for o, v in zip(node.outs, outs):
        env2[o] = v
    outs = [read(compiled.hidden_out(leaf)) for leaf in compiled.hidden]
    return outs + [read(c.pre) for c in compiled.cross_inputs.values()]

  primals = (
      [sg(env[i]) for i in h_ids],
      [jnp.zeros_like(env[i]) for i in y_ids],
  )
  return cut, primals


def _one_hot_tangents(
    primals: Sequence[jax.Array], seeds: Sequence[tuple[str, int]], kind: str
) -> list[jax.Array]:
  """Per primal, the stack over seeds of ones where the seed is it."""
  return [
      jnp.stack(
          [
              jnp.ones_like(p) if s == (kind, i) else jnp.zeros_like(p)
              for s in seeds
          ]
      )
      for i, p in enumerate(primals)
  ]  # pyformat: disable


def _seeded_relations(compiled: compiler_lib.CompiledStep) -> list:
  """Relations whose output gets a forward-mode seed: the fed ones and the
  sources of cross-group hops."""
  num_h = len(compiled.hidden)
  sources = 0
  for c in compiled.cross_inputs.values():
    sources |= c.sources
  return [
      r
      for r, rel in enumerate(compiled.relations)
      if rel.groups or sources >> (num_h + r) & 1
  ]


def _jacobians(
    compiled: compiler_lib.CompiledStep, env: dict[int, Any]
) -> StepRecord:
  """``D`` per group, ``D_f`` per relation and the cross-group hops' input
  derivatives, from batched JVPs: one per group, and one over the hops'
  sources for their inputs."""
  hidden = compiled.hidden
  fed = _seeded_relations(compiled)
  cut, (h0, d0) = _cut_step(compiled, env, fed)
  pos = {leaf: i for i, leaf in enumerate(hidden)}
  members = [
      [pos[leaf] for leaf in compiled.group_leaves(g)]
      for g in range(len(compiled.groups))
  ]

  def batched(seeds: Sequence[tuple[str, int]]) -> list[jax.Array]:
    th = _one_hot_tangents(h0, seeds, "h")
    td = _one_hot_tangents(d0, seeds, "y")
    tangents = jax.vmap(lambda a, b: jax.jvp(cut, (h0, d0), (a, b))[1])(th, td)
    return [backend.materialize(lax.stop_gradient(t)) for t in tangents]

  # One seed of ones per hidden state and per seeded relation output. The
  # cut step holds every ETP output, so a group's seeds reach its own new
  # state only: each group needs its own seeds and relations.
  per_group = []
  for g, m in enumerate(members):
    seeds = [("h", i) for i in m] + [
        ("y", k) for k, r in enumerate(fed) if g in compiled.relations[r].groups
    ]
    per_group.append((batched(seeds), {s: n for n, s in enumerate(seeds)}))

  def column(g: int, seed: tuple[str, int]) -> jax.Array:
    tangents, index = per_group[g]
    return jnp.stack([tangents[a][index[seed]] for a in members[g]], axis=-1)

  ds = tuple(
      jnp.stack([column(g, ("h", b)) for b in m], axis=-1)
      for g, m in enumerate(members)
  )
  xs, d_f = _relation_inputs(compiled, env), []
  for r, rel in enumerate(compiled.relations):
    d_f.append(tuple(column(g, ("y", fed.index(r))) for g in rel.groups))
  hops = (None,) * len(compiled.relations)
  if compiled.cross_inputs:
    # The hops' inputs from the seeds of their sources alone (the new
    # states' tangents of this product are not used).
    num_h = len(hidden)
    bits = 0
    for c in compiled.cross_inputs.values():
      bits |= c.sources
    seeds = [
        ("h", b) if b < num_h else ("y", fed.index(b - num_h))
        for b in program_lib.set_bits(bits)
    ]
    hops = _hop_inputs(
        compiled, batched(seeds), {s: n for n, s in enumerate(seeds)}, fed
    )
  return StepRecord(xs, ds, tuple(d_f), hops)


def _hop_inputs(
    compiled: compiler_lib.CompiledStep,
    tangents: Sequence[Any],
    seed_index: Mapping[tuple[str, int], int],
    fed: Sequence[int],
) -> tuple:
  """Per relation, ``{source bit: d pre / d source}`` for the hop relations."""
  num_h = len(compiled.hidden)
  pre_tangents = dict(zip(compiled.cross_inputs, tangents[num_h:]))
  out: list[Optional[dict[int, jax.Array]]] = [None] * len(compiled.relations)
  for r, c in compiled.cross_inputs.items():
    t, found = pre_tangents[r], {}
    for bit in program_lib.set_bits(c.sources):
      seed = ("h", bit) if bit < num_h else ("y", fed.index(bit - num_h))
      found[bit] = t[seed_index[seed]]
    out[r] = found
  return tuple(out)


def relation_weights(
    compiled: compiler_lib.CompiledStep, params: hk.Params
) -> list:
  """Trainable operands of every relation, computed from ``params``.

  Differentiable in ``params``: the learners pull weight-shaped gradients
  back to the parameters with its VJP.
  """
  program = compiled.program
  leaves = tree_util.tree_leaves(params)
  env = dict(zip(program.invars[: compiled.num_param_leaves], leaves))
  for ni in compiled.weight_nodes:
    node = program.nodes[ni]
    for o, v in zip(node.outs, _bind(node, [_read(env, a) for a in node.ins])):
      env[o] = v
  out = []
  for rel in compiled.relations:
    node = program.nodes[rel.node]
    out.append(
        {
            k: _read(env, node.ins[i])
            for k, i in rel.primitive.trainable_invars(rel.params).items()
        }
    )
  return out


def hidden_entries(model_state: hk.State) -> list:
  """``(module, name)`` of the hidden entries, in the state's leaf order."""
  return [
      (m, n)
      for m, n, _ in state_lib.iter_state(model_state)
      if state_lib.is_hidden_name(n)
  ]


def flat_hidden(
    model_state: hk.State, entries: Optional[Sequence[tuple[str, str]]] = None
) -> jax.Array:
  """The hidden values of each sample in one vector, ``(B, H)``."""
  entries = hidden_entries(model_state) if entries is None else entries
  leaves = [model_state[m][n] for m, n in entries]
  batch = jnp.shape(leaves[0])[0]
  return jnp.concatenate([jnp.reshape(v, (batch, -1)) for v in leaves], -1)


def with_flat_hidden(
    model_state: hk.State, entries: Sequence[tuple[str, str]], h: jax.Array
) -> dict:
  """``model_state`` with its hidden entries (``entries``, in
  :func:`flat_hidden`'s order) replaced by the columns of ``h`` ``(B, H)``."""
  st = {m: dict(e) for m, e in model_state.items()}
  start = 0
  for m, n in entries:
    shape = jnp.shape(model_state[m][n])
    size = int(math.prod(shape[1:]))
    st[m][n] = jnp.reshape(h[:, start : start + size], shape)
    start += size
  return st


def _param_items(params: hk.Params) -> list:
  """``(path, module, name)`` of every parameter leaf, in leaf order."""
  return [
      (
          "/".join(str(getattr(k, "key", k)) for k in path),
          path[0].key,
          path[1].key,
      )
      for path, _ in tree_util.tree_flatten_with_path(params)[0]
  ]


def full_jacobian(
    model: hk.TransformedWithState,
    params: hk.Params,
    model_state: hk.State,
    rng: Optional[jax.Array],
    x: Any,
    paths: Sequence[str],
) -> FullJacobian:
  """The step's per-sample Jacobians with respect to old hidden state and
  to the parameters in ``paths``.

  Samples are independent, so each is the step on a batch of one, under
  ``vmap``; the Jacobians are ``H`` reverse-mode products each (``jacrev``),
  which works through ``custom_vjp`` surrogates that forward mode refuses.
  Everything is gradient-stopped.

  Args:
    model: the ``hk.transform_with_state`` step (its ``apply`` takes rng).
    params: parameters.
    model_state: the model state before the step.
    rng: the step's rng or ``None``.
    x: the step's input (batch first).
    paths: paths of the parameters to differentiate.

  Returns:
    A :class:`FullJacobian`.
  """
  sg = lax.stop_gradient
  params, model_state, x = sg(params), sg(model_state), sg(x)
  one, sub, state_axes = _sample_step(model, params, model_state, rng, paths)
  entries = hidden_entries(model_state)
  jac = jax.vmap(
      jax.jacrev(one, argnums=(0, 1)), in_axes=(None, 0, state_axes, 0)
  )
  d_sub, d_h = jac(sub, flat_hidden(model_state, entries), model_state, x)
  batch, num_h = d_h.shape[:2]
  d_sub = {
      path: sg(jnp.reshape(v, (batch, num_h, -1))) for path, v in d_sub.items()
  }
  return FullJacobian(sg(d_h), d_sub)


def relation_jacobian(
    compiled: compiler_lib.CompiledStep,
    params: hk.Params,
    state: hk.State,
    rng: Optional[jax.Array],
    x: Any,
) -> tuple:
  """``(J, deltas, xs)`` of one step from ``H`` batched reverse products:
  ``J`` ``(B, H, H)``; per relation ``deltas[r]`` ``(B, H, O)``, the
  derivative of each new hidden value with respect to the relation's
  output; ``xs[r]`` its input. Samples are independent, so the cotangent
  ``e_k`` on every sample gives each sample's row ``k``."""
  sg = lax.stop_gradient
  params, state, x = sg(params), sg(state), sg(x)
  entries = hidden_entries(state)
  h = flat_hidden(state, entries)
  program = compiled.program
  probes = {}
  for r, rel in enumerate(compiled.relations):
    aval = program.aval(program.nodes[rel.node].outs[0])
    probes[r] = jnp.zeros(aval.shape, aval.dtype)

  def f(h: jax.Array, pr: dict[int, jax.Array]) -> tuple[jax.Array, Any]:
    _, new, record = run_step(
        compiled,
        params,
        with_flat_hidden(state, entries, h),
        rng,
        x,
        jacobians=False,
        probes=pr,
    )
    return flat_hidden(new, entries), record.x

  out, pull, xs = jax.vjp(f, h, probes, has_aux=True)
  num_h = out.shape[1]
  cot = jnp.broadcast_to(
      jnp.eye(num_h, dtype=out.dtype)[:, None, :], (num_h,) + out.shape
  )
  d_h, d_y = jax.vmap(pull)(cot)
  j = jnp.swapaxes(d_h, 0, 1)
  deltas = {r: jnp.swapaxes(v, 0, 1) for r, v in d_y.items()}
  return sg(j), {r: sg(v) for r, v in deltas.items()}, xs


def projection_signs(
    rng: Optional[jax.Array], h: jax.Array, kind: str
) -> jax.Array:
  """UORO's ``nu`` for hidden values ``h`` ``(B, H)``: random signs drawn
  from ``rng`` (``kind="signs"``) or ones (``"ones"``)."""
  if kind == "signs":
    if rng is None:
      raise ValueError(
          "uoro draws random signs at every step: pass an rng to "
          "sequence_grad / value_and_grad (the step's rng is folded from it)."
      )
    key = jax.random.fold_in(rng, 0x5EED)
    return jax.random.rademacher(key, h.shape, h.dtype)
  return jnp.ones_like(h)


def projects_by_relations(
    compiled: compiler_lib.CompiledStep, paths: Sequence[str]
) -> bool:
  """Whether ``nu^T dh/dtheta`` per sample can come from the relations:
  every parameter in ``paths`` reaches the step only as (part of) trainable
  operands of ETP ops that take a batched input."""
  program = compiled.program
  weight_nodes = set(compiled.weight_nodes)
  index = {
      path: program.invars[i] for i, path in enumerate(compiled.param_paths)
  }
  derived = {index[p] for p in paths}
  for ni in sorted(weight_nodes):
    node = program.nodes[ni]
    if any(not isinstance(a, Lit) and a in derived for a in node.ins):
      derived.update(node.outs)
  by_node = {rel.node: rel for rel in compiled.relations}
  for ni, node in enumerate(program.nodes):
    if ni in weight_nodes:
      continue
    for pos, a in enumerate(node.ins):
      if isinstance(a, Lit) or a not in derived:
        continue
      rel = by_node.get(ni)
      if (
          rel is None
          or pos not in rel.primitive.trainable_invars(rel.params).values()
      ):
        return False
      if (
          rel.primitive.x_invar_index is None
          or rel.primitive.batch_axes(rel.params) is None
      ):
        return False
  return not any(
      not isinstance(a, Lit) and a in derived for a in program.outvars
  )


class Projection(NamedTuple):
  """UORO's record of one step: ``nu`` ``(B, H)`` and ``nu^T dh_t/dtheta``
  per sample, either as the relations' factors ``(xs, deltas, weights)``
  (:func:`relation_projection`; the products are formed where they are
  used, by :func:`projected_pieces`) or as ``pieces``, ``{path: pieces}``
  (:func:`sample_projection`). The other field is ``None``."""

  nu: Any
  factors: Any = None
  pieces: Any = None


def relation_projection(
    compiled: compiler_lib.CompiledStep,
    params: hk.Params,
    model_state: hk.State,
    rng: Optional[jax.Array],
    x: Any,
    paths: Sequence[str],
    kind: str,
) -> Projection:
  """:func:`sample_projection` from the ETP relations: one batched VJP of
  ``nu . h_t`` to every relation's output (a probe); per sample, each
  relation's weight gradient ``xy_to_dw(x_b, delta_b)`` pulled back to the
  parameters is formed later (:func:`projected_pieces`) from the inputs
  ``x``, the output cotangents ``delta`` and the weights recorded here.
  Valid where :func:`projects_by_relations` holds."""
  del paths
  sg = lax.stop_gradient
  params, model_state, x = sg(params), sg(model_state), sg(x)
  entries = hidden_entries(model_state)
  h = flat_hidden(model_state, entries)
  nu = projection_signs(rng, h, kind)
  program = compiled.program
  probes = {
      r: jnp.zeros(
          program.aval(program.nodes[rel.node].outs[0]).shape,
          program.aval(program.nodes[rel.node].outs[0]).dtype,
      )
      for r, rel in enumerate(compiled.relations)
  }

  def f(pr: dict[int, jax.Array]) -> tuple[jax.Array, Any]:
    _, new, record = run_step(
        compiled, params, model_state, rng, x, jacobians=False, probes=pr
    )
    return flat_hidden(new, entries), record.x

  out, pull, xs = jax.vjp(f, probes, has_aux=True)
  (deltas,) = pull(nu.astype(out.dtype))
  weights = relation_weights(compiled, params)
  return Projection(nu, factors=sg((xs, deltas, weights)))


def projected_pieces(
    compiled: compiler_lib.CompiledStep,
    params: hk.Params,
    paths: Sequence[str],
    projection: Projection,
) -> tuple[dict[str, tuple[jax.Array, ...]], Union[jax.Array, int]]:
  """``({path: pieces}, squared norm per sample)`` of a step's
  ``nu^T dh_t/dtheta``, in the pieces of :func:`projection_layout`
  (each ``(B, size)``)."""
  if projection.pieces is not None:
    return projection.pieces, _sq_norm(projection.pieces)

  def per_sample_grads(
      xs: Sequence[Any],
      deltas: Mapping[int, jax.Array],
      weights: Sequence[Mapping[str, jax.Array]],
  ) -> list[dict[str, jax.Array]]:
    out = []
    for r, rel in enumerate(compiled.relations):
      xa, ya = rel.primitive.batch_axes(rel.params)

      def one(
          x_b: jax.Array,
          d_b: jax.Array,
          rel: compiler_lib.Relation = rel,
          r: int = r,
          xa: int = xa,
          ya: int = ya,
      ) -> dict[str, jax.Array]:
        return rel.primitive.rules.xy_to_dw(
            jnp.expand_dims(x_b, xa),
            jnp.expand_dims(d_b, ya),
            weights[r],
            **rel.params,
        )

      out.append(jax.vmap(one, in_axes=(xa, ya))(xs[r], deltas[r]))
    return out

  per_sample = per_sample_grads(*projection.factors)
  batch = projection.nu.shape[0]
  tiles = leaf_tiles(compiled, paths)
  if tiles is None:
    _, weights_pull = jax.vjp(
        lambda p: relation_weights(compiled, p), lax.stop_gradient(params)
    )
    grads = jax.vmap(lambda cot: weights_pull(cot)[0])(per_sample)
    leaves = dict(zip(compiled.param_paths, tree_util.tree_leaves(grads)))
    pieces: dict[str, tuple[jax.Array, ...]] = {
        p: (jnp.reshape(leaves[p], (batch, -1)),) for p in paths
    }
    return pieces, _sq_norm(pieces)
  # Kept in pieces, each fused into the trace update: the transpose of the
  # slices (a sum of zero-padded pieces) or a concatenation is materialised
  # on XLA:CPU. The norm comes from a second copy of the products (cheap to
  # recompute) behind a barrier, so that XLA does not materialise the pieces
  # to share them between the norm and the update.
  cut = lambda grads: {
      p: tuple(jnp.reshape(grads[r][k], (batch, -1)) for r, k in use)
      for p, (_, use) in tiles.items()
  }
  again = per_sample_grads(*lax.optimization_barrier(projection.factors))
  return cut(per_sample), _sq_norm(cut(again))


def _sq_norm(
    pieces: Mapping[str, Sequence[jax.Array]],
) -> Union[jax.Array, int]:
  # Per sample; 0 without pieces.
  """Per sample, the squared norm of every piece together."""
  return sum(
      jnp.sum(v * v, axis=tuple(range(1, v.ndim)))
      for vs in pieces.values()
      for v in vs
  )


def projection_layout(
    compiled: compiler_lib.CompiledStep, paths: Sequence[str]
) -> dict:
  """``{path: (axis, shapes)}``: the pieces in which ``record.projection``
  holds each parameter's ``nu^T dh/dtheta`` (each ``(B, size)``), and the
  axis along which their shapes tile the parameter. One piece, the whole
  parameter, unless :func:`leaf_tiles` finds the parameters cut into ETP
  operands."""
  program = compiled.program
  avals = {
      path: program.aval(program.invars[i])
      for i, path in enumerate(compiled.param_paths)
  }
  tiles = None
  if projects_by_relations(compiled, paths):
    tiles = leaf_tiles(compiled, paths)
  if tiles is None:
    return {p: (0, (program_lib.shape(avals[p]),)) for p in paths}
  out = {}
  for p, (axis, pieces) in tiles.items():
    out[p] = (
        axis,
        tuple(
            program_lib.shape(
                program.aval(
                    program.nodes[compiled.relations[r].node].ins[
                        compiled.relations[r].primitive.trainable_invars(
                            compiled.relations[r].params
                        )[k]
                    ]
                )
            )
            for r, k in pieces
        ),
    )
  return out


def join_pieces(
    layout: tuple[int, tuple[tuple[int, ...], ...]],
    pieces: Sequence[jax.Array],
    batched: bool = True,
) -> jax.Array:
  """One parameter's pieces (flat, ``(B, size)`` if ``batched``) joined
  into its flat ``(B, n)`` (or ``(n,)``) form; ``layout`` is its entry of
  :func:`projection_layout`."""
  axis, shapes = layout
  lead = (pieces[0].shape[0],) if batched else ()
  if len(pieces) == 1:
    return pieces[0]
  whole = jnp.concatenate(
      [jnp.reshape(v, lead + tuple(s)) for v, s in zip(pieces, shapes)],
      axis=axis + len(lead),
  )
  return jnp.reshape(whole, lead + (-1,))


def leaf_tiles(
    compiled: compiler_lib.CompiledStep, paths: Sequence[str]
) -> Optional[dict]:
  """``{path: (axis, [(relation, key), ...])}`` when every parameter in
  ``paths`` is the trainable operand of ETP relations whole or cut into
  contiguous slices along one axis that tile it once (``hk.GRU``'s gates),
  listed in order along ``axis``; ``None`` otherwise."""
  program = compiled.program
  leaf_of = {
      program.invars[i]: path for i, path in enumerate(compiled.param_paths)
  }
  made_by = {}
  for ni in compiled.weight_nodes:
    for o in program.nodes[ni].outs:
      made_by[o] = program.nodes[ni]
  uses: dict[str, list[tuple[Any, ...]]] = {p: [] for p in paths}
  for r, rel in enumerate(compiled.relations):
    node = program.nodes[rel.node]
    for key, i in rel.primitive.trainable_invars(rel.params).items():
      var = node.ins[i]
      if isinstance(var, Lit):
        continue
      if var in leaf_of:
        shape = program_lib.shape(program.aval(var))
        use = (leaf_of[var], 0, 0, shape[0] if shape else 1, shape)
      elif var in made_by and made_by[var].prim.name == "slice":
        src = made_by[var]
        if isinstance(src.ins[0], Lit) or src.ins[0] not in leaf_of:
          return None
        shape = program_lib.shape(program.aval(src.ins[0]))
        start = src.params["start_indices"]
        limit = src.params["limit_indices"]
        strides = src.params.get("strides")
        cut = [
            a
            for a in range(len(shape))
            if (start[a], limit[a]) != (0, shape[a])
        ]
        if (strides and any(s != 1 for s in strides)) or len(cut) > 1:
          return None
        axis = cut[0] if cut else 0
        use = (leaf_of[src.ins[0]], axis, start[axis], limit[axis], shape)
      else:
        return None
      if use[0] in uses:
        uses[use[0]].append(use[1:] + ((r, key),))
  tiles = {}
  for path, pieces in uses.items():
    if not pieces:
      return None
    axes = {a for a, *_ in pieces}
    if len(axes) != 1:
      return None
    (axis,) = axes
    pieces.sort(key=lambda u: u[1])
    shape = pieces[0][3]
    ends = [0] + [u[2] for u in pieces]
    if any(u[1] != e for u, e in zip(pieces, ends)) or ends[-1] != (
        shape[axis] if shape else 1
    ):
      return None
    tiles[path] = (axis, [u[4] for u in pieces])
  return tiles


def sample_projection(
    model: hk.TransformedWithState,
    params: hk.Params,
    model_state: hk.State,
    rng: Optional[jax.Array],
    x: Any,
    paths: Sequence[str],
    kind: str,
) -> Projection:
  """``nu`` and ``{path: (nu_b^T dh_t/dtheta per sample,)}`` of one step.

  ``nu`` is ``(B, H)``: random signs from ``rng`` (``kind="signs"``) or ones
  (``"ones"``); the products are ``(B, n)`` per parameter, in one piece
  (see :func:`projection_layout`), one reverse-mode product per sample
  (batch-one replays under ``vmap``). Gradient-stopped.
  """
  sg = lax.stop_gradient
  params, model_state, x = sg(params), sg(model_state), sg(x)
  one, sub, state_axes = _sample_step(model, params, model_state, rng, paths)
  h = flat_hidden(model_state)
  nu = projection_signs(rng, h, kind)

  def project(
      h_b: jax.Array, state_b: hk.State, x_b: Any, nu_b: jax.Array
  ) -> dict[str, jax.Array]:
    _, pull = jax.vjp(lambda s: one(s, h_b, state_b, x_b), sub)
    return pull(nu_b)[0]

  out = jax.vmap(project, in_axes=(0, state_axes, 0, 0))(h, model_state, x, nu)
  batch = h.shape[0]
  return Projection(
      nu, pieces={p: (sg(jnp.reshape(v, (batch, -1))),) for p, v in out.items()}
  )


def hidden_jvp(
    compiled: compiler_lib.CompiledStep,
    params: hk.Params,
    model_state: hk.State,
    rng: Optional[jax.Array],
    x: Any,
    tangent: jax.Array,
) -> jax.Array:
  """``J_t u``: the step's Jacobian of new hidden values with respect to old
  ones applied to ``tangent`` ``(B, H)``, through the compiled program.

  Samples are independent, so the batched product is per sample. It is the
  transpose of the step's VJP (reverse mode only, so it runs through
  ``custom_vjp`` surrogates). Gradient-stopped.
  """
  sg = lax.stop_gradient
  params, model_state, x = sg(params), sg(model_state), sg(x)
  entries = hidden_entries(model_state)

  def f(h: jax.Array) -> jax.Array:
    st = with_flat_hidden(model_state, entries, h)
    _, new, _ = run_step(compiled, params, st, rng, x, jacobians=False)
    return flat_hidden(new, entries)

  h = flat_hidden(model_state, entries)
  _, pull = jax.vjp(f, h)
  (ju,) = jax.linear_transpose(lambda c: pull(c)[0], h)(tangent.astype(h.dtype))
  return sg(ju)


def _sample_step(
    model: hk.TransformedWithState,
    params: hk.Params,
    model_state: hk.State,
    rng: Optional[jax.Array],
    paths: Sequence[str],
) -> tuple[
    Callable[..., jax.Array],
    dict[str, jax.Array],
    dict[str, dict[str, Optional[int]]],
]:
  """``(one, sub, state_axes)``: ``one(sub, h_b, state_b, x_b)`` is the new
  hidden values of sample ``b`` (the step on a batch of one) as a function
  of the parameters in ``paths`` (``sub``) and its old hidden values."""
  entries = hidden_entries(model_state)
  shapes = [jnp.shape(model_state[m][n])[1:] for m, n in entries]
  sizes = [int(math.prod(s)) for s in shapes]
  items = [i for i in _param_items(params) if i[0] in set(paths)]
  sub = {path: params[m][n] for path, m, n in items}
  batched = lambda n: state_lib.is_hidden_name(n) or state_lib.is_sample_name(n)
  state_axes = {
      m: {n: 0 if batched(n) else None for n in e}
      for m, e in model_state.items()
  }

  def one(
      sub: dict[str, jax.Array], h_b: jax.Array, state_b: hk.State, x_b: Any
  ) -> jax.Array:
    p = {m: dict(e) for m, e in params.items()}
    for path, m, n in items:
      p[m][n] = sub[path]
    st = {
        m: {n: v[None] if batched(n) else v for n, v in e.items()}
        for m, e in state_b.items()
    }
    start = 0
    for (m, n), shape, size in zip(entries, shapes, sizes):
      st[m][n] = jnp.reshape(h_b[start : start + size], (1,) + shape)
      start += size
    new: hk.State
    _, new = model.apply(p, st, rng, tree_util.tree_map(lambda v: v[None], x_b))
    return jnp.concatenate([jnp.reshape(new[m][n], (-1,)) for m, n in entries])

  return one, sub, state_axes
