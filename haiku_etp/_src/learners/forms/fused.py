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
r"""The fused form: each step folded into the traces, contracted once.

For algorithms whose ``form`` is ``"fused"`` (ES-D-RTRL's
``form="fused"``): the step runs once under a VJP that gives the parameters
their gradient outside the traced relations, ``dL_t/dy_t`` at each traced
relation's output (zero probes added there) and, when the algorithm's needs
ask for ``previous_signal``, ``dL_t/dh^{t-1}`` with the recurrent
relations' inputs held; the traces are rolled, then the algorithm's
``fused_solve`` contracts them once per relation (``docs/design.md``, "The
fused form").
"""

from typing import Any
import jax
from jax import tree_util
import jax.numpy as jnp

from haiku_etp._src.compiler import recording
from haiku_etp._src.learners.algorithms import protocol
from haiku_etp._src.learners.forms import sequence
from haiku_etp._src.learners.forms import window as window_lib


def gradient(
    problem, params: Any, model_state: Any, trace: protocol.Traces, inputs: Any
):
  """One step's ``(grads, model_state, trace, losses, aux)`` in the fused
  form; ``inputs`` are ``(rngs, xs, ys, masks)`` with a leading axis of 1."""
  compiled, algorithm = problem.compiled, problem.algorithm
  loss_fn, has_aux = problem.loss_fn, problem.has_aux
  rng_t, x_t, y_t, mask_t = (sequence.first_step(v) for v in inputs)
  needs = protocol.step_needs(algorithm, compiled)
  hidden_paths = recording.hidden_entries(model_state)
  program = compiled.program
  y_aval = lambda rel: program.aval(program.nodes[rel.node].outs[0])
  probes = {
      r: jnp.zeros(y_aval(rel).shape, y_aval(rel).dtype)
      for r, rel in enumerate(compiled.relations)
      if rel.groups
  }
  cut = recording.recurrent_relations(compiled)
  h_e = [model_state[m][n] for m, n in hidden_paths]

  def run(p, h, pr):
    st = window_lib.with_hidden(model_state, hidden_paths, h)
    out, st, rec = recording.run_step(
        compiled,
        p,
        st,
        rng_t,
        x_t,
        jacobians=needs.per_position,
        probes=pr,
        cut_inputs=cut,
    )
    loss, aux = window_lib.call_loss(loss_fn, out, y_t, mask_t, has_aux)
    return loss, (loss, aux, rec, st)

  if needs.previous_signal:
    _, pull, (loss, aux, rec, new_state) = jax.vjp(
        run, params, h_e, probes, has_aux=True
    )
    grads, prev, immediate = pull(jnp.ones((), loss.dtype))
    prev = window_lib.group_signals(compiled, hidden_paths, prev)
  else:
    _, pull, (loss, aux, rec, new_state) = jax.vjp(
        lambda p, pr: run(p, h_e, pr), params, probes, has_aux=True
    )
    grads, immediate = pull(jnp.ones((), loss.dtype))
    prev = None
  operands, pull_w = jax.vjp(lambda p: algorithm.operands(compiled, p), params)
  new_trace = algorithm.roll(compiled, trace, rec, operands)
  (from_traces,) = pull_w(
      algorithm.fused_solve(
          compiled, trace, new_trace, prev, immediate, operands
      )
  )
  grads = tree_util.tree_map(
      lambda a, b: a + b.astype(a.dtype), grads, from_traces
  )
  add = (
      lambda t: None if t is None else tree_util.tree_map(lambda v: v[None], t)
  )
  return grads, new_state, new_trace, loss[None], add(aux)
