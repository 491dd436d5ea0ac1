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
"""Backend-tuned forms of the few ops on the trace path.

The trace roll and solve are memory-bound: every step reads and writes every
trace once. On XLA:CPU three plain forms run far below copy speed on
trace-sized arrays, so the CPU path uses rewritten forms that compute the
same values:

* a contraction over the ``S`` states (``einsum`` over a small trailing axis)
  becomes a short Python loop of broadcasts that XLA fuses into one pass;
* a sum over leading (batch, position) axes becomes a pairwise tree of
  elementwise adds;
* the per-step Jacobians are kept out of the trace-roll fusion, or XLA
  recomputes every position's tail derivatives once per trace element.

On other backends the plain forms are used: fused reductions and
contractions are what their compilers are built for. :func:`cpu_tuned`
decides, at trace time, from ``jax.default_backend()``; :func:`tuning`
overrides it (the rules benchmark measures both forms on the same machine).
``experiments/benchmarks/rules.py`` shows where each form wins.
"""

import contextlib
from typing import Iterator, Optional, TypeVar

import jax
from jax import lax
import jax.numpy as jnp

_T = TypeVar("_T")

_OVERRIDE: list[bool] = []


def cpu_tuned() -> bool:
  """Whether the CPU-tuned forms are used when a function is traced."""
  if _OVERRIDE:
    return _OVERRIDE[-1]
  return jax.default_backend() == "cpu"


@contextlib.contextmanager
def tuning(cpu: Optional[bool]) -> Iterator[None]:
  """Forces the CPU-tuned forms on (``True``) or off (``False``) while tracing.

  ``None`` restores the automatic choice. The switch is read when a function
  is traced and is not part of JAX's trace cache key: a function already
  traced (or compiled) keeps the form it was traced with, so trace a fresh
  function (a new lambda) under each setting.
  """
  if cpu is None:
    yield
    return
  _OVERRIDE.append(bool(cpu))
  try:
    yield
  finally:
    _OVERRIDE.pop()


def materialize(x: _T) -> _T:
  """Identity that stops XLA from fusing ``x``'s producer into its consumers.

  ``x`` is an array or a pytree of arrays.

  Fused into the trace roll, every trace element would recompute its
  position's tail derivatives (all seeds of the forward-mode pass), once per
  input unit. An optimisation barrier keeps the values in memory on every
  backend, without the arithmetic an identity product would add.
  """
  return lax.optimization_barrier(x)


def mix_states(d: jax.Array, trace: jax.Array) -> jax.Array:
  """``out[..., a] = sum_b d[..., a, b] * trace[..., b]``, ``d`` broadcasting."""
  if not cpu_tuned():
    return jnp.einsum("...ab,...b->...a", d, trace)
  out = d[..., 0] * trace[..., 0:1]
  for b in range(1, trace.shape[-1]):
    out = out + d[..., b] * trace[..., b : b + 1]
  return out


def weighted_state_sum(trace: jax.Array, g: jax.Array) -> jax.Array:
  """``sum_a trace[..., a] * g[..., a]`` over the trailing state axis."""
  if not cpu_tuned():
    return jnp.einsum("...a,...a->...", trace, g)
  out = trace[..., 0] * g[..., 0]
  for a in range(1, trace.shape[-1]):
    out = out + trace[..., a] * g[..., a]
  return out


def sum_leading(x: jax.Array, num_axes: int) -> jax.Array:
  """Sums the first ``num_axes`` axes of ``x``."""
  if num_axes == 0:
    return x
  if not cpu_tuned():
    return jnp.sum(x, axis=tuple(range(num_axes)))
  x = jnp.reshape(x, (-1,) + x.shape[num_axes:])
  while x.shape[0] > 1:
    half = x.shape[0] // 2
    head = x[:half] + x[half : 2 * half]
    if x.shape[0] % 2:
      head = jnp.concatenate([head, x[2 * half :]], axis=0)
    x = head
  return x[0]
