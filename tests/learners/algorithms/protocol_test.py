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
"""The learner protocol and the registry, from outside ``_src``.

A toy rule defined here (the immediate gradient alone: no credit from the
past, a step counter as its only trace) plugs into ``sequence_grad``,
``value_and_grad``, ``unroll``, ``report`` and the training pipeline through
the registry.
"""

import dataclasses
import inspect

from absl.testing import absltest
import haiku as hk
import jax

import haiku_etp
from haiku_etp import testing
from tests import test_util


def _gru(x):
  return haiku_etp.Linear(2, name="readout")(haiku_etp.GRU(4)(x))


class ToyLearnerTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))
    self.model, self.params, self.state, self.xs, self.ys = test_util.setup(
        _gru, (3, 2), num_steps=5
    )
    self.learner = test_util.make_immediate(self.model)
    with testing.expect_warning(
        haiku_etp.ApproximationWarning, "immediate_only: no credit"
    ):
      _, self.st = self.learner.init(jax.random.PRNGKey(0), self.xs[0])

  def test_sequence_grad_is_truncated_bptt_of_one_step(self):
    res = jax.jit(self.learner.sequence_grad(testing.mse))(
        self.params, self.st, None, self.xs, self.ys
    )
    tbptt = haiku_etp.tbptt(self.model, window=1)
    _, st = tbptt.init(jax.random.PRNGKey(0), self.xs[0])
    ref = jax.jit(tbptt.sequence_grad(testing.mse))(
        self.params, st, None, self.xs, self.ys
    )
    test_util.assert_trees_close(res.grads, ref.grads, 1e-12)
    self.assertEqual(int(self.learner.traces(res.state)["steps"]), 5)
    # The plain order rolls the same traces.
    plain = jax.jit(
        self.learner.sequence_grad(testing.mse, roll_order="same_step")
    )(self.params, self.st, None, self.xs, self.ys)
    test_util.assert_trees_close(plain.grads, res.grads, 1e-12)

  def test_value_and_grad_unroll_report(self):
    step = self.learner.value_and_grad(testing.mse)
    res = step(self.params, self.st, None, self.xs[0], self.ys[0])
    self.assertEqual(int(self.learner.traces(res.state)["steps"]), 1)
    outs, _ = self.learner.unroll(self.params, self.st, None, self.xs)
    self.assertEqual(outs.shape, (5, 3, 2))
    report = self.learner.report(self.params, self.st, None, self.xs[0])
    self.assertIn("learner: immediate (approximate for", report)
    self.assertIn("approximate: immediate_only", report)
    self.assertIn("steps: shape=() dtype=int32", report)

  def test_not_an_algorithm(self):
    with self.assertRaisesRegex(TypeError, r"is not a TraceAlgorithm.*'solve'"):

      @dataclasses.dataclass(frozen=True)
      class Broken:
        name: str = "broken"

      haiku_etp.extend.from_algorithm(self.model, Broken())


class RegistryTest(absltest.TestCase):

  def test_unknown_name_lists_the_registered(self):
    model = hk.transform_with_state(_gru)
    with self.assertRaisesRegex(
        ValueError,
        r"Unknown learner 'nope'; the registered learners are \['d_rtrl', "
        r"'es_d_rtrl', 'rtrl', 'uoro', 'snap', 'eprop', 'rflo', 'bptt', "
        r"'tbptt'",
    ):
      haiku_etp.make_learner("nope", model)
    with self.assertRaisesRegex(ValueError, r"takes the options \['decay'"):
      haiku_etp.make_learner("es_d_rtrl", model, alpha=0.9)
    with self.assertRaisesRegex(ValueError, "option=value"):
      haiku_etp.parse_learner("es_d_rtrl:0.9")
    self.assertEqual(
        haiku_etp.parse_learner("es_d_rtrl:decay=(0.9, 0.0):form=fused"),
        ("es_d_rtrl", {"decay": (0.9, 0.0), "form": "fused"}),
    )
    with self.assertRaisesRegex(ValueError, "registered already"):
      haiku_etp.extend.register_learner("bptt", haiku_etp.bptt)
    # The options are the factories' keyword parameters, read from their
    # signatures; a hand-written list is checked against the signature.
    for name in ("d_rtrl", "es_d_rtrl", "rtrl", "snap", "eprop", "tbptt"):
      spec = haiku_etp.learner_spec(name)
      params = list(inspect.signature(spec.factory).parameters)[1:]
      self.assertEqual(spec.options, tuple(params), name)
    with self.assertRaisesRegex(
        ValueError, r"takes no options \['nope'\]; its options are \['fast'"
    ):
      haiku_etp.extend.register_learner(
          "other", haiku_etp.d_rtrl, options=("nope",)
      )
    self.assertNotIn("other", haiku_etp.learner_names())


if __name__ == "__main__":
  absltest.main()
