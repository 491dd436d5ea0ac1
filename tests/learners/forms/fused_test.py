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
"""What ``es_d_rtrl(form="fused")`` computes per step, and through which API.

The fused form's point is its cost: one weight contraction per relation and
step, and no backward pass through a recurrent weight. Counted here in the
compiled program (convolutions and matrix products per step), never timed;
the benchmark prints the times. Its exact cases are in
learners_exact_test.py, its error on spiking networks in cross_test.py.
"""

import functools
import re
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import testing
from tests import test_util

H = haiku_etp


def _conv_leaky(x):
  y = H.Conv2D(4, 3, name="conv")(x)
  v = H.get_hidden_state("v", y.shape, y.dtype)
  v = 0.8 * v + y
  H.set_hidden_state("v", v)
  return jnp.mean(v, axis=(1, 2))


def _gru(x):
  return H.Linear(2, name="readout")(H.GRU(6)(x))


def _lif_readout(x):
  return H.LeakyReadout(3, tau=5.0)(H.LIF(tau=5.0)(H.Linear(8)(x)))


_STEPS = {
    "conv_leaky": (_conv_leaky, (2, 6, 6, 2)),
    "gru": (_gru, (2, 4)),
    "lif_readout": (_lif_readout, (2, 4)),
}

_LEARNERS = {
    "window": functools.partial(H.es_d_rtrl, decay=0.5),
    "fused": functools.partial(H.es_d_rtrl, decay=0.5, form="fused"),
    "fused_alpha_f_0": functools.partial(
        H.es_d_rtrl, decay=(0.5, 0.0), form="fused"
    ),
    "bptt": H.bptt,
}


_TRACE_KEY = "~etp/es_d_rtrl"


def _count(hlo: str, op: str) -> int:
  """Instructions ``op`` of the loops' bodies in optimised HLO text (fused
  computations too, by their source location): one step's worth, however
  many steps run before the loop."""
  return len([l for l in re.findall(rf" {op}\(.*", hlo) if "while/body" in l])


def _problem(name, num_steps=5, dtype=jnp.float64):
  step, shape = _STEPS[name]
  return test_util.setup(step, shape, num_steps, dtype=dtype, scale=3.0)


def _contractions(name, learner_name):
  """Convolutions plus matrix products per step of one compiled
  ``sequence_grad``, after XLA removed dead code."""
  model, params, _, xs, ys = _problem(name, dtype=jnp.float32)
  learner = _LEARNERS[learner_name](model)
  _, state = learner.init(jax.random.PRNGKey(0), xs[0])
  fn = jax.jit(learner.sequence_grad(test_util.mse))
  hlo = fn.lower(params, state, None, xs, ys).compile().as_text()
  return _count(hlo, "convolution") + _count(hlo, "dot")


class CostTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore", H.ApproximationWarning)

  def test_conv_kernel_is_contracted_once_per_step(self):
    # BPTT: the forward convolution and the kernel gradient. The window
    # form adds the trace contraction to the VJP's own kernel gradient;
    # the fused form folds the step into the trace and contracts once.
    counts = {n: _contractions("conv_leaky", n) for n in _LEARNERS}
    print(f"\nconvolutions and products per step: {counts}")
    self.assertEqual(counts["bptt"], 2)
    self.assertEqual(counts["window"], 3)
    self.assertEqual(counts["fused"], 2)
    self.assertEqual(counts["fused_alpha_f_0"], 2)

  @parameterized.parameters("gru", "lif_readout")
  def test_fewer_products_than_the_window_form_and_bptt(self, name):
    # No weight gradient inside the VJP, and no backward product through a
    # recurrent weight (the GRU's hidden-side gates): fewer products per
    # step than BPTT itself, which needs both.
    counts = {n: _contractions(name, n) for n in _LEARNERS}
    print(f"\n{name}: products per step: {counts}")
    self.assertLess(counts["fused"], counts["window"])
    self.assertLessEqual(counts["fused"], counts["bptt"])
    self.assertEqual(counts["fused_alpha_f_0"], counts["fused"])
    if name == "gru":
      self.assertLess(counts["fused"], counts["bptt"])


class _Float64TestCase(parameterized.TestCase):
  """Float64, with the learners' expected ApproximationWarning silenced."""

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))
    self.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore", H.ApproximationWarning)


class CreditTest(_Float64TestCase):

  @parameterized.parameters("gru", "lif_readout")
  def test_every_parameter_gets_a_gradient(self, name):
    # The GRU's reset gate reaches the state only through r * h_{t-1}, the
    # input of a recurrent relation: that input is not cut (a relation
    # output of the step reaches it), so the reset gate keeps its credit.
    # The spiking layer's input weights reach the loss through the readout
    # inside the step.
    model, params, state, xs, ys = _problem(name, num_steps=8)
    reference, _ = testing.bptt_grads(
        model, test_util.mse, params, state, None, xs, ys
    )
    got = test_util.learner_grads(
        _LEARNERS["fused"](model), test_util.mse, params, xs, ys
    ).grads
    for path, ref in jax.tree_util.tree_leaves_with_path(reference):
      leaf = got
      for entry in path:
        leaf = leaf[entry.key]
      # The GRU's parameters hold the gates z, r, a side by side (columns).
      gates = 3 if path[0].key == "gru" else 1
      for k, (part, part_ref) in enumerate(
          zip(np.split(leaf, gates, -1), np.split(ref, gates, -1))
      ):
        where = f"{jax.tree_util.keystr(path)}[..., part {k} of {gates}]"
        self.assertGreater(float(np.linalg.norm(part_ref)), 0.0, msg=where)
        self.assertGreater(float(np.linalg.norm(part)), 0.0, msg=where)
        cos = testing.cosine_similarity(part, part_ref)
        print(f"{name} {where}: cos {cos:.4f}")


class InterfaceTest(_Float64TestCase):

  @parameterized.parameters("fused", "fused_alpha_f_0")
  def test_value_and_grad_steps_equal_sequence_grad(self, learner_name):
    model, params, _, xs, ys = _problem("lif_readout", num_steps=6)
    learner = _LEARNERS[learner_name](model)
    _, state = learner.init(jax.random.PRNGKey(0), xs[0])
    seq = jax.jit(learner.sequence_grad(test_util.mse))(
        params, state, None, xs, ys
    )
    step = jax.jit(learner.value_and_grad(test_util.mse))
    total = jax.tree_util.tree_map(jnp.zeros_like, params)
    losses = []
    for t in range(xs.shape[0]):
      res = step(params, state, None, xs[t], ys[t])
      state = res.state
      losses.append(res.loss)
      total = jax.tree_util.tree_map(jnp.add, total, res.grads)
    np.testing.assert_allclose(losses, seq.losses, rtol=1e-12)
    self.assertLess(testing.relative_error(total, seq.grads), 1e-12)
    # The traces carry credit across steps: the same steps with the traces
    # zeroed before each one give another gradient.
    _, state = learner.init(jax.random.PRNGKey(0), xs[0])
    alone = jax.tree_util.tree_map(jnp.zeros_like, params)
    for t in range(xs.shape[0]):
      state = dict(state)
      state[_TRACE_KEY] = jax.tree_util.tree_map(
          jnp.zeros_like, state[_TRACE_KEY]
      )
      res = step(params, state, None, xs[t], ys[t])
      state = res.state
      alone = jax.tree_util.tree_map(jnp.add, alone, res.grads)
    self.assertGreater(testing.relative_error(alone, seq.grads), 1e-3)

  def test_mask_and_aux_through_sequence_grad(self):
    # A mask and a loss with an auxiliary output: the fused sequence
    # gradient equals its steps taken one by one with mask_t, and aux is
    # stacked.
    model, params, _, xs, ys = _problem("lif_readout", num_steps=5)
    mask = jnp.asarray([1.0, 0.0, 1.0, 1.0, 0.0])

    def loss(out, y):
      return test_util.mse(out, y), {"sum": jnp.sum(out)}

    learner = _LEARNERS["fused"](model)
    _, state = learner.init(jax.random.PRNGKey(0), xs[0])
    seq = jax.jit(learner.sequence_grad(loss, has_aux=True))(
        params, state, None, xs, ys, mask
    )
    self.assertEqual(seq.aux["sum"].shape, (5,))
    step = jax.jit(learner.value_and_grad(loss, has_aux=True))
    total = jax.tree_util.tree_map(jnp.zeros_like, params)
    for t in range(5):
      res = step(params, state, None, xs[t], ys[t], mask[t])
      state = res.state
      total = jax.tree_util.tree_map(jnp.add, total, res.grads)
      np.testing.assert_allclose(res.aux["sum"], seq.aux["sum"][t], rtol=1e-12)
      np.testing.assert_allclose(res.loss, seq.losses[t], rtol=1e-12)
    self.assertLess(testing.relative_error(total, seq.grads), 1e-12)
    self.assertEqual(float(seq.losses[1]), 0.0)

  def test_warning_names_the_fused_form(self):
    model, params, _, xs, ys = _problem("gru", num_steps=2)
    learner = _LEARNERS["fused"](model)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always", H.ApproximationWarning)
      _, state = learner.init(jax.random.PRNGKey(0), xs[0])
      learner.sequence_grad(test_util.mse)(params, state, None, xs, ys)
    texts = [
        str(w.message)
        for w in caught
        if issubclass(w.category, H.ApproximationWarning)
    ]
    self.assertTrue(texts)
    self.assertIn("form='fused' also drops", texts[0])


if __name__ == "__main__":
  absltest.main()
