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
"""Helpers shared by the test files: losses, spikes, leaky steps, data.

Exactness is checked in float64: tests enter ``jax.enable_x64(True)``
themselves (``self.enter_context(jax.enable_x64(True))`` in ``setUp``).
"""

import warnings

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import testing

# Exact learners agree with the BPTT oracle to this relative error in float64.
EXACT_RTOL = 1e-8

mse = testing.mse


def masked_mse(out, y, mask_t=None):
  """Mean squared error, weighted by a per-step or per-sample mask."""
  err = jnp.mean((out - y) ** 2, axis=tuple(range(1, out.ndim)))
  if mask_t is None:
    return jnp.mean(err)
  return jnp.mean(jnp.broadcast_to(mask_t, err.shape) * err)


def surrogate_grad(v):
  """The derivative the test spikes use: ``1 / (1 + |v|)^2``."""
  return 1.0 / (1.0 + jnp.abs(v)) ** 2


def heaviside(v):
  return (v > 0).astype(v.dtype)


@jax.custom_jvp
def spike_jvp(v):
  """A Heaviside spike with a surrogate derivative, as a custom_jvp."""
  return heaviside(v)


@spike_jvp.defjvp
def _spike_jvp_rule(primals, tangents):
  (v,), (v_dot,) = primals, tangents
  return spike_jvp(v), surrogate_grad(v) * v_dot


@jax.custom_vjp
def spike_vjp(v):
  """The same spike as a custom_vjp."""
  return heaviside(v)


spike_vjp.defvjp(
    lambda v: (heaviside(v), v), lambda v, g: (surrogate_grad(v) * g,)
)


def leaky(y, leak=0.8, name="v"):
  """``v_t = leak * v_{t-1} + y``: gives a feed-forward op a memory."""
  v = haiku_etp.get_hidden_state(name, y.shape, y.dtype)
  v = leak * v + y
  haiku_etp.set_hidden_state(name, v)
  return v


def sequence(shape, num_steps, seed=0, dtype=jnp.float64, scale=1.0):
  """Standard normal time-major data ``(T, *shape)`` from a seed."""
  rs = np.random.RandomState(seed)
  return jnp.asarray(scale * rs.normal(size=(num_steps,) + tuple(shape)), dtype)


def setup(step, x_shape, num_steps=5, seed=0, dtype=jnp.float64, scale=1.0):
  """``(model, params, state, xs, ys)`` for a step on random data.

  ``state`` is the model's own state (no learner entries); targets have the
  step's output shape.
  """
  model = hk.transform_with_state(step)
  xs = sequence(x_shape, num_steps, seed, dtype, scale)
  params, state = model.init(jax.random.PRNGKey(seed), xs[0])
  out = jax.eval_shape(model.apply, params, state, None, xs[0])[0]
  ys = sequence(out.shape, num_steps, seed + 1, dtype)
  return model, params, state, xs, ys


def learner_grads(learner, loss_fn, params, xs, ys, rng=None, **kwargs):
  """``SequenceResult`` of ``learner`` from a fresh state, under jit."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
    _, state = learner.init(jax.random.PRNGKey(0), xs[0])
    fn = jax.jit(learner.sequence_grad(loss_fn, **kwargs))
    return fn(params, state, rng, xs, ys)


def assert_trees_close(actual, expected, rtol=EXACT_RTOL):
  """Largest per-leaf relative error below ``rtol``."""
  err = testing.relative_error(actual, expected)
  assert err <= rtol, f"relative error {err:.3e} > {rtol:.1e}"
