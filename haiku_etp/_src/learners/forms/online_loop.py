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
learning signal; step 0 runs before the loop and the last roll follows it.
The contraction thus reads
the roll's output, and the roll is the only reader of the loop-carried
traces, so the compiler updates them in place instead of copying them every
step (the window form's order, contraction then roll, both reading the entry
traces, makes it copy). The sums are the window form's.
"""

from typing import Any

import jax
from jax import lax
from jax import tree_util
import jax.numpy as jnp

from haiku_etp._src.learners.algorithms import protocol
from haiku_etp._src.learners.forms import sequence
from haiku_etp._src.learners.forms import window as window_lib

# The orders a sequence of one-step windows can take (``sequence_grad``'s
# ``roll_order``): the roll moved into the next step, or the plain window
# order (contract, then roll).
ORDERS = ("next_step", "same_step")


def check_order(order: str) -> None:
  if order not in ORDERS:
    raise ValueError(f"roll_order must be one of {ORDERS}, got {order!r}.")


def sequence_gradient(
    problem, params: Any, model_state: Any, trace: protocol.Traces, inputs: Any
):
  """``(grads, model_state, trace, losses, aux)`` over a whole sequence of
  one-step windows; ``inputs`` are ``(rngs, xs, ys, masks)``, time-leading.

  The first step runs before the loop (its traces are the entry's, with no
  roll), so that no step selects between rolled and unrolled traces: a
  select would read and write every trace once more per step.
  """
  compiled, algorithm = problem.compiled, problem.algorithm
  num_steps = sequence.time_length(inputs[1], "xs")
  operands = algorithm.operands(compiled, params)
  roll = lambda trace, record: algorithm.roll(compiled, trace, record, operands)
  one = lambda records: tree_util.tree_map(lambda v: v[0], records)
  piece = lambda i: tree_util.tree_map(
      lambda v: lax.dynamic_slice_in_dim(v, i, 1), inputs
  )
  first = window_lib.terms(
      problem,
      params,
      model_state,
      trace,
      tree_util.tree_map(lambda v: v[:1], inputs),
  )

  def body(carry, i: jax.Array):
    model_state, trace, grads, pending = carry
    # The records are carried as the step returns them (window axis first)
    # and sliced here: sliced before the carry, XLA copied carried values
    # every step (tests/learners/forms/online_loop_test.py).
    trace = roll(trace, one(pending))
    t = window_lib.terms(problem, params, model_state, trace, piece(i))
    grads = tree_util.tree_map(jnp.add, grads, t.grads)
    return (t.model_state, trace, grads, t.records), (t.losses, t.aux)

  (model_state, trace, grads, pending), (losses, aux) = lax.scan(
      body,
      (first.model_state, trace, first.grads, first.records),
      jnp.arange(1, num_steps),
  )
  trace = roll(trace, one(pending))
  flat = lambda v: v.reshape((-1,) + v.shape[2:])
  join = lambda head, rest: jnp.concatenate([head, flat(rest)])
  aux = None if aux is None else tree_util.tree_map(join, first.aux, aux)
  return grads, model_state, trace, join(first.losses, losses), aux
