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

import dataclasses
import inspect
import os
import warnings

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import testing

# Exact learners agree with the BPTT oracle to this relative error in float64.
EXACT_RTOL = 1e-8
# The repository's root (README commands run from here).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

mse = testing.mse


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


def primitive_names(jaxpr):
  """Names of all primitives in ``jaxpr``, nested jaxprs included."""
  from jax.extend import core as jex_core  # pylint: disable=g-import-not-at-top

  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for value in eqn.params.values():
      values = value if isinstance(value, (tuple, list)) else (value,)
      for sub in values:
        if isinstance(sub, (jex_core.ClosedJaxpr, jex_core.Jaxpr)):
          names |= primitive_names(sub)
  return names


def pairwise(*factors):
  """Rows that cover every pair of levels of every two factors.

  A deterministic greedy covering array: each row is a tuple with one level
  per factor, and for any two factors every combination of their levels is
  in some row. One factor gives its levels as one-element rows.
  """
  import itertools  # pylint: disable=g-import-not-at-top

  levels = [tuple(f) for f in factors]
  if len(levels) == 1:
    return [(v,) for v in levels[0]]
  n = len(levels)
  pairs = lambda r: {
      (i, r[i], j, r[j]) for i in range(n) for j in range(i + 1, n)
  }
  candidates = list(itertools.product(*(range(len(l)) for l in levels)))
  uncovered = set().union(*(pairs(r) for r in candidates))
  rows = []
  while uncovered:
    best = max(candidates, key=lambda r: len(pairs(r) & uncovered))
    rows.append(best)
    uncovered -= pairs(best)
  return [tuple(levels[i][k] for i, k in enumerate(r)) for r in rows]


def compile_once(fn):
  """:func:`fast_jit` of ``fn``, traced with the non-partitionable threefry.

  For oracle-sized programs run once. The partitionable threefry (JAX's
  default) takes seconds to compile on XLA:CPU for multi-axis shapes, and
  what an oracle draws is random either way.
  """
  jitted = fast_jit(fn)

  def call(*args):
    with jax.threefry_partitionable(False):
      return jitted(*args)

  return call


def jit_oracle(oracle, prim, params, **static):
  """A rule oracle under ``jit``: ``fn(weights, xs, **traced) -> result``.

  ``oracle`` is ``testing.drtrl_rule_oracle`` or ``testing.pp_rule_oracle``;
  ``static`` are its Python-valued options (``num_hidden_state``,
  ``strip_batch``, ``fast``, ``num_steps``, ...), the keyword arguments of
  ``fn`` its traced ones (``decay``, ``leak``), so one compilation serves
  every value of those. The oracle unrolls its steps; compiled as one
  program (:func:`compile_once`) it costs one compilation instead of one
  per op and shape.
  """
  run = compile_once(
      lambda weights, xs, traced: oracle(
          prim, weights, xs, params, **static, **traced
      )
  )
  return lambda weights, xs, **traced: run(
      dict(weights), xs, jax.tree_util.tree_map(jnp.asarray, traced)
  )


# XLA:CPU's backend optimisation takes seconds on the small programs a test
# compiles once (sampling parameters with the partitionable threefry alone
# can take over ten); at level 0 and with the classic fusion emitters they
# compile several times faster. Tolerances are unchanged.
FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
}


def fast_jit(fn, **kwargs):
  """``jax.jit`` with :data:`FAST_COMPILE`, for programs a test runs once."""
  return jax.jit(fn, compiler_options=FAST_COMPILE, **kwargs)


def bptt_and_windows(
    model, learner, params, learner_state, model_state, xs, ys, windows
):
  """``(BPTT's gradients, {window: learner's SequenceResult})`` on
  ``(xs, ys)`` with :func:`testing.mse`, all in one :func:`fast_jit`
  program; BPTT runs ``model`` from ``model_state``, the learner from
  ``learner_state``."""
  fns = {k: learner.sequence_grad(testing.mse, window=k) for k in windows}

  def run(params, learner_state, xs, ys):
    reference, _ = testing.bptt_grads(
        model, testing.mse, params, model_state, None, xs, ys
    )
    return reference, {
        k: fn(params, learner_state, None, xs, ys) for k, fn in fns.items()
    }

  return fast_jit(run)(params, learner_state, xs, ys)


def random_params(shapes, seed=0):
  """Parameters with the structure of ``shapes`` (e.g. from ``eval_shape``).

  Weights (rank >= 2) are normal with std ``1/sqrt(fan_in)`` (all axes but
  the last), vectors normal with std 0.5, so biases are non-zero too. Drawn
  with NumPy: no rng program to compile.
  """
  rs = np.random.RandomState(seed)

  def draw(leaf):
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 4
    return jnp.asarray(rs.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

  return jax.tree_util.tree_map(draw, shapes)


def _describe_init(init):
  if inspect.isroutine(init) or not hasattr(init, "__dict__"):
    return init  # A function such as jnp.zeros.
  attrs = {k: np.asarray(v).tolist() for k, v in vars(init).items()}
  return type(init), attrs


def param_creations(fn, *args):
  """``[(name, shape, dtype, initialiser)]`` of the parameters ``fn`` makes.

  In creation order, read with ``hk.custom_creator`` while ``fn(*args)`` is
  initialised under ``eval_shape``: nothing is drawn. An initialiser object
  is given as its class and attributes. Two functions with the same
  creations draw the same values from the same rng (the initialisers take
  the rng keys in order).
  """
  calls = []

  def creator(next_creator, shape, dtype, init, context):
    calls.append(
        (
            context.full_name,
            tuple(shape),
            jnp.dtype(dtype),
            _describe_init(init),
        )
    )
    return next_creator(shape, dtype, init)

  def wrapped(*args):
    with hk.custom_creator(creator):
      return fn(*args)

  init = hk.transform_with_state(wrapped).init
  jax.eval_shape(init, jax.random.PRNGKey(0), *args)
  return calls


# A toy learner on the protocol, written against it without AlgorithmBase.


@dataclasses.dataclass(frozen=True)
class Immediate:
  """The step's own gradient, nothing through the entry state."""

  name: str = "immediate"
  form: str = "window"
  needs: haiku_etp.extend.StepNeeds = haiku_etp.extend.StepNeeds(
      per_position=False
  )
  cross_budget: int = 0

  def init(self, compiled):
    del compiled
    return {"steps": jnp.zeros((), jnp.int32)}

  def operands(self, compiled, params):
    del compiled, params
    return {}

  def roll(self, compiled, traces, record, operands):
    del compiled, record, operands
    return {"steps": traces["steps"] + 1}

  def solve(self, compiled, traces, signals, operands):
    del compiled, traces, signals, operands
    return {}

  def verdicts(self, compiled):
    return tuple(
        haiku_etp.ParameterVerdict(
            p.path,
            p.role,
            p.role == "non-temporal",
            () if p.role == "non-temporal" else ("immediate_only",),
        )
        for p in compiled.parameters
    )

  def note(self, compiled):
    del compiled
    return "immediate_only: no credit reaches earlier steps. "

  def check(self, compiled, traces):
    del compiled, traces


def make_immediate(model):
  return haiku_etp.extend.from_algorithm(model, Immediate())


def lru_stack(
    x: jax.Array,
    *,
    width: int = 4,
    hidden: int = 5,
    num_layers: int = 2,
    outputs: int = 2,
    r_min: float = 0.5,
    r_max: float = 0.95,
) -> jax.Array:
  """The LRU stack of the long-range configs: a ``Linear`` encoder, blocks
  ``u <- u + gelu(Linear(LRU(u)))``, a ``Linear`` readout."""
  u = haiku_etp.Linear(width, name="encoder")(x)
  for layer in range(num_layers):
    y = haiku_etp.LRU(
        hidden, output_size=width, r_min=r_min, r_max=r_max, name=f"lru_{layer}"
    )(u)
    u = u + jax.nn.gelu(haiku_etp.Linear(width, name=f"mlp_{layer}")(y))
  return haiku_etp.Linear(outputs, name="readout")(u)
