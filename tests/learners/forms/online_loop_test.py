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
"""The online loop updates its traces in place.

``sequence_grad`` over one-step windows rolls each step's traces at the start
of the next iteration, so the roll is the only reader of the loop-carried
traces (docs/design.md, "The window form"). Checked in the compiled program:
without cross-group traces the loop body copies no trace. With the plain
order (contract, then roll, both on the entry traces) XLA copies every trace
every step, which the control case shows, so the check can fail.
"""

import re
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp

import haiku_etp
from tests import test_util

H = haiku_etp


def _gru(x):
  return H.Linear(2, name="readout")(H.GRU(6)(x))


def _lif_readout(x):
  return H.LeakyReadout(3, tau=5.0)(H.LIF(tau=5.0)(H.Linear(8)(x)))


def _conv_lif(x):
  s = H.LIF(tau=5.0)(H.Conv2D(3, 3, name="conv")(x))
  return H.LeakyReadout(3, tau=5.0)(jnp.mean(s, axis=(1, 2)))


_STEPS = {
    "gru": (_gru, (4, 5)),
    "lif_readout": (_lif_readout, (4, 5)),
    "conv_lif": (_conv_lif, (2, 6, 6, 2)),
}


def _problem(name):
  step, shape = _STEPS[name]
  return test_util.setup(step, shape, num_steps=6, dtype=jnp.float32, scale=3.0)


def _loop_copies(hlo: str) -> set:
  """Shapes of the float copies in the compiled program's loop bodies."""
  copies = set()
  for body in re.findall(r"body=%([\w.\-]+)", hlo):
    text = hlo[hlo.index(f"\n%{body} ") :]
    text = text[: text.index("\n}")]
    for dims in re.findall(r"= f32\[([\d,]*)\]\{[\d,]*\} copy\(", text):
      copies.add(tuple(int(d) for d in dims.split(",") if d))
  return copies


def _trace_shapes(learner, state) -> set:
  leaves = jax.tree_util.tree_leaves(learner.traces(state))
  return {tuple(v.shape) for v in leaves if v.ndim > 2}


_LEARNERS = dict(
    d_rtrl=H.d_rtrl,
    d_rtrl_cut=lambda m: H.d_rtrl(m, max_cross_bytes=0),
    es_d_rtrl=lambda m: H.es_d_rtrl(m, decay=0.5),
)


class LoopCopiesTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore", H.ApproximationWarning)

  # D-RTRL with cross-group traces is left out: a cross trace's roll reads
  # its source's previous trace too, so the source has two readers and XLA
  # still copies it (docs/design.md, "The window form").
  # ES-D-RTRL is left out too: its output-side traces are output-sized and
  # their roll a few element-wise products, which XLA recomputes inside the
  # contraction's fusion as well, so the carried value has two readers and
  # is copied, one output-sized copy per step (an optimization barrier does
  # not survive XLA:CPU's pipeline).
  @parameterized.parameters(*_STEPS)
  def test_no_trace_is_copied_in_the_loop(self, name):
    self.assertEmpty(*_copied(name, "d_rtrl_cut"))

  def test_no_cross_group_trace_in_the_gru(self):
    # D-RTRL on the GRU has no cross-group trace, so it too copies nothing.
    self.assertEmpty(*_copied("gru", "d_rtrl"))

  def test_control_plain_order_copies_the_traces(self):
    # Contracting and then rolling, both on the carried traces (the order
    # without the pipelining), makes XLA copy every trace every step.
    copied, _ = _copied("gru", "d_rtrl", roll_order="same_step")
    self.assertNotEmpty(copied)


class SameSumsTest(parameterized.TestCase):

  # Each learner once, the cross-group traces (lif_readout) and a conv.
  @parameterized.parameters(
      ("gru", "d_rtrl"),
      ("lif_readout", "d_rtrl"),
      ("lif_readout", "d_rtrl_cut"),
      ("conv_lif", "es_d_rtrl"),
  )
  def test_in_place_order_equals_plain_order(self, name, learner):
    # Float64: the in-place loop order changes where the roll happens, not
    # what is summed; gradients, losses and the final traces agree.
    with jax.enable_x64(True), warnings.catch_warnings():
      warnings.simplefilter("ignore", H.ApproximationWarning)
      step, shape = _STEPS[name]
      model, params, _, xs, ys = test_util.setup(step, shape, num_steps=6)
      make = _LEARNERS[learner]
      results = []
      for order in ("next_step", "same_step"):
        results.append(
            test_util.learner_grads(
                make(model), test_util.mse, params, xs, ys, roll_order=order
            )
        )
      new, old = results
      test_util.assert_trees_close(new.grads, old.grads, rtol=1e-12)
      test_util.assert_trees_close(new.losses, old.losses, rtol=1e-12)
      test_util.assert_trees_close(
          make(model).traces(new.state),
          make(model).traces(old.state),
          rtol=1e-12,
      )


def _copied(name, learner_name, roll_order="next_step"):
  """``(trace shapes copied in the loop, message)`` of one compiled run."""
  model, params, _, xs, ys = _problem(name)
  learner = _LEARNERS[learner_name](model)
  _, state = learner.init(jax.random.PRNGKey(0), xs[0])
  fn = jax.jit(learner.sequence_grad(test_util.mse, roll_order=roll_order))
  hlo = fn.lower(params, state, None, xs, ys).compile().as_text()
  traces = _trace_shapes(learner, state)
  assert traces, "no trace of rank > 2"
  copied = _loop_copies(hlo) & traces
  return copied, f"{learner_name} on {name}: traces copied: {copied}"


if __name__ == "__main__":
  absltest.main()
