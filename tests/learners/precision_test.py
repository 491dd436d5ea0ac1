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
"""Traces stored in bfloat16 or float16 (``trace_dtype``).

The storage dtype is read off the compiled program and the learner state;
the gradients stay close to the float32 traces' (measured, not exact);
feedback matrices keep their dtype; the pipeline trains with it; a bad
dtype, or float64 without JAX's 64-bit mode, is an error naming the
argument.
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

_T, _B = 12, 4


def _eprop_model():
  def step(x):
    alif = haiku_etp.RecurrentALIF(tau=5.0, tau_adapt=20.0, beta_adapt=0.5)
    return haiku_etp.LeakyReadout(2, tau=10.0)(alif(haiku_etp.Linear(8)(x)))

  return hk.transform_with_state(step)


def _problem(model):
  rs = np.random.RandomState(0)
  xs = jnp.asarray(3.0 * rs.normal(size=(_T, _B, 3)), jnp.float32)
  params, state = model.init(jax.random.PRNGKey(0), xs[0])
  ys = jnp.asarray(rs.normal(size=(_T, _B, 2)), jnp.float32)
  return params, state, xs, ys


class TraceDtypeTest(parameterized.TestCase):

  @parameterized.parameters(
      ("d_rtrl", "bfloat16"),
      ("es_d_rtrl", "float16"),
      ("eprop", "bfloat16"),
  )
  def test_storage_dtype_and_fidelity(self, name, dtype):
    model = _eprop_model()
    params, state, xs, ys = _problem(model)
    options = {"feedback": "random"} if name == "eprop" else {}
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
      full = haiku_etp.make_learner(name, model, **options)
      low = haiku_etp.make_learner(name, model, trace_dtype=dtype, **options)
      full_state = full.init_state(params, state, None, xs[0])
      low_state = low.init_state(params, state, None, xs[0])
    rng = jax.random.PRNGKey(1)
    fn = jax.jit(low.sequence_grad(testing.mse))
    result = fn(params, low_state, rng, xs, ys)
    reference = jax.jit(full.sequence_grad(testing.mse))(
        params, full_state, rng, xs, ys
    )
    traces = low.traces(result.state)
    feedback = {k for k in traces if "feedback:" in k}
    for k, v in traces.items():
      if not jnp.issubdtype(v.dtype, jnp.floating):
        continue  # ES-D-RTRL's step count
      want = jnp.float32 if k in feedback else jnp.dtype(dtype)
      self.assertEqual(v.dtype, want, k)
    self.assertEqual(len(feedback), int(name == "eprop"))
    # The compiled program carries the traces in that dtype, at their
    # shapes, from step to step.
    text = fn.lower(params, low_state, rng, xs, ys).compile().as_text()
    short = {"bfloat16": "bf16", "float16": "f16"}[dtype]
    for k, v in traces.items():
      if v.dtype == jnp.dtype(dtype) and v.ndim > 1:
        self.assertIn(f"{short}[{','.join(map(str, v.shape))}]", text, k)
    cosine = testing.cosine_similarity(result.grads, reference.grads)
    ratio = float(
        np.linalg.norm(
            np.concatenate(
                [np.ravel(g) for g in jax.tree_util.tree_leaves(result.grads)]
            )
        )
        / np.linalg.norm(
            np.concatenate(
                [
                    np.ravel(g)
                    for g in jax.tree_util.tree_leaves(reference.grads)
                ]
            )
        )
    )
    # bfloat16 keeps 8 bits of mantissa: a few parts in a thousand.
    self.assertGreater(cosine, 0.999, (cosine, ratio))
    self.assertBetween(ratio, 0.99, 1.01)

  def test_bad_dtype_names_the_argument(self):
    model = _eprop_model()
    for bad in ("int8", "float8", 3):
      with self.subTest(bad=bad):
        with self.assertRaisesRegex(ValueError, "trace_dtype must be None or"):
          haiku_etp.d_rtrl(model, trace_dtype=bad)
    with self.assertRaisesRegex(ValueError, "trace_dtype must be None or"):
      haiku_etp.make_learner("snap", model, trace_dtype="int32")

  def test_float64_without_x64_is_one_error(self):
    model = _eprop_model()
    regex = (
        r"trace_dtype='float64' needs JAX's 64-bit mode, which is off .*"
        r'jax\.config\.update\("jax_enable_x64", True\).*JAX_ENABLE_X64=1'
    )
    with jax.enable_x64(False), warnings.catch_warnings():
      warnings.simplefilter("error")  # refused before any JAX conversion
      with self.assertRaisesRegex(ValueError, regex):
        haiku_etp.d_rtrl(model, trace_dtype="float64")
      with self.assertRaisesRegex(ValueError, regex):
        haiku_etp.make_learner("es_d_rtrl", model, trace_dtype=jnp.float64)
    with jax.enable_x64(True):
      learner = haiku_etp.d_rtrl(model, trace_dtype="float64")
    # Made with 64-bit mode on, used with it off: refused at init.
    with jax.enable_x64(False):
      with self.assertRaisesRegex(ValueError, regex):
        learner.init(jax.random.PRNGKey(0), jnp.ones((_B, 3)))


if __name__ == "__main__":
  absltest.main()
