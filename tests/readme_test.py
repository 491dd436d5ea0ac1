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
"""Runs the training loop shown in README.md, so the README stays true."""

import os
import re
import warnings

from absl.testing import absltest
import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import saiunit as u

import haiku_etp

_README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def _training_block() -> str:
  with open(_README) as f:
    text = f.read()
  section = text[text.index("## Online training") :]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _modules_block() -> str:
  """The block that writes a step with the library's layers."""
  with open(_README) as f:
    text = f.read()
  blocks = re.findall(r"```python\n(.*?)```", text, re.S)
  return next(b for b in blocks if "def snn" in b)


def _haiku_block() -> str:
  """The block that trains an unmodified Haiku model."""
  with open(_README) as f:
    text = f.read()
  blocks = re.findall(r"```python\n(.*?)```", text, re.S)
  return next(b for b in blocks if "def haiku_rnn" in b)


class ReadmeTest(absltest.TestCase):

  def test_block_is_short(self):
    lines = [l for l in _training_block().splitlines() if l.strip()]
    self.assertLessEqual(len(lines), 20)

  def test_training_loop_learns(self):
    namespace = {}
    exec(compile(_training_block(), "README.md", "exec"), namespace)  # pylint: disable=exec-used
    # The readout starts at zero, so the first loss is the targets' power.
    first = float(jnp.mean(namespace["ys"] ** 2))
    last = float(np.mean(namespace["losses"]))
    self.assertTrue(np.isfinite(last))
    self.assertLess(last, 0.5 * first)

  def test_modules_block_trains_online(self):
    namespace = dict(haiku_etp=haiku_etp, u=u)
    exec(compile(_modules_block(), "README.md", "exec"), namespace)  # pylint: disable=exec-used
    learner = haiku_etp.d_rtrl(hk.transform_with_state(namespace["snn"]))
    xs = (jax.random.uniform(jax.random.PRNGKey(0), (3, 2, 100)) < 0.3) * 1.0
    # Cross-group traces carry the readout's leak: exact, so no warning.
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      params, state = learner.init(jax.random.PRNGKey(1), xs[0])
    self.assertEmpty(
        [w for w in caught if w.category is haiku_etp.ApproximationWarning]
    )
    losses, grads, _, _ = learner.sequence_grad(
        lambda o, y: jnp.mean((o - y) ** 2)
    )(params, state, None, xs, jnp.ones((3, 2, 10)))
    self.assertEqual(losses.shape, (3,))
    chex.assert_trees_all_equal_structs(grads, params)
    chex.assert_tree_all_finite(grads)
    self.assertCountEqual(
        params, ["linear", "leaky_readout"], "the block's modules"
    )

  def test_haiku_block_is_rtrl_exact(self):
    namespace = dict(haiku_etp=haiku_etp, hk=hk, jax=jax)
    exec(compile(_haiku_block(), "README.md", "exec"), namespace)  # pylint: disable=exec-used
    learner = namespace["learner"]
    model = hk.transform_with_state(namespace["haiku_rnn"])
    with jax.enable_x64(True):
      xs = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 3), jnp.float64)
      ys = jax.random.normal(jax.random.PRNGKey(1), (4, 2, 1), jnp.float64)
      params, state = learner.init(jax.random.PRNGKey(2), xs[0])
      mse = lambda o, y: jnp.mean((o - y) ** 2)
      grads = jax.jit(learner.sequence_grad(mse, window=1))(
          params, state, None, xs, ys
      ).grads
      model_state = {k: v for k, v in state.items() if not k.startswith("~")}
      reference, _ = haiku_etp.testing.bptt_grads(
          model, mse, params, model_state, None, xs, ys
      )
    self.assertLess(haiku_etp.testing.relative_error(grads, reference), 1e-10)
    # The model is Haiku's: its parameters carry Haiku's own names.
    self.assertCountEqual(params, ["lstm/linear", "lstm_1/linear", "linear"])
    # D-RTRL announces where it cuts, naming the LSTMs' weights.
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      haiku_etp.d_rtrl(model).init(jax.random.PRNGKey(2), xs[0])
    messages = [
        str(w.message)
        for w in caught
        if w.category is haiku_etp.ApproximationWarning
    ]
    self.assertLen(messages, 1)
    self.assertIn("lstm/linear/w", messages[0])


if __name__ == "__main__":
  absltest.main()
