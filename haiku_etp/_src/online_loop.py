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
"""The online loop: one-step windows over a sequence, traces updated in place.

Iteration ``t`` first rolls the traces through step ``t - 1`` (with the
record carried from it), then contracts the rolled traces with step ``t``'s
learning signal; the last roll follows the loop. The contraction thus reads
the roll's output, and the roll is the only reader of the loop-carried
traces, so the compiler updates them in place instead of copying them every
step (the window form's order, contraction then roll, both reading the entry
traces, makes it copy). The sums are the window form's.
"""

import jax
from jax import lax
from jax import tree_util
import jax.numpy as jnp

from haiku_etp._src import protocol
from haiku_etp._src import sequence
from haiku_etp._src import window as window_lib

# The orders a sequence of one-step windows can take (``sequence_grad``'s
# ``roll_order``): the roll moved into the next step, or the plain window
# order (contract, then roll).
ORDERS = ("next_step", "same_step")


def check_order(order: str) -> None:
  if order not in ORDERS:
    raise ValueError(f"roll_order must be one of {ORDERS}, got {order!r}.")


def sequence_gradient(problem, params, model_state, trace, inputs):
  """``(grads, model_state, trace, losses, aux)`` over a whole sequence of
  one-step windows; ``inputs`` are ``(rngs, xs, ys, masks)``, time-leading.
  """
  compiled, algorithm = problem.compiled, problem.algorithm
  num_steps = sequence.time_length(inputs[1], "xs")
  step = window_lib.recording_step_fn(
      compiled, problem.model, protocol.step_needs(algorithm, compiled)
  )
  record = jax.eval_shape(
      lambda: step(
          params,
          model_state,
          sequence.first_step(inputs[0]),
          sequence.first_step(inputs[1]),
      )[2]
  )
  pending = tree_util.tree_map(
      lambda a: jnp.zeros((1, *a.shape), a.dtype), record
  )
  operands = algorithm.operands(compiled, params)
  roll = lambda trace, records: window_lib.roll(
      compiled, algorithm, trace, records, operands, 1
  )

  def body(carry, i):
    model_state, trace, grads, pending = carry
    pieces = tree_util.tree_map(
        lambda v: lax.dynamic_slice_in_dim(v, i, 1), inputs
    )
    rolled = roll(trace, pending)
    trace = {k: jnp.where(i == 0, trace[k], rolled[k]) for k in trace}
    t = window_lib.terms(problem, params, model_state, trace, pieces)
    grads = tree_util.tree_map(jnp.add, grads, t.grads)
    return (t.model_state, trace, grads, t.records), (t.losses, t.aux)

  zeros = tree_util.tree_map(jnp.zeros_like, params)
  (model_state, trace, grads, pending), (losses, aux) = lax.scan(
      body, (model_state, trace, zeros, pending), jnp.arange(num_steps)
  )
  trace = roll(trace, pending)
  flat = lambda v: v.reshape((-1,) + v.shape[2:])
  aux = None if aux is None else tree_util.tree_map(flat, aux)
  return grads, model_state, trace, flat(losses), aux
