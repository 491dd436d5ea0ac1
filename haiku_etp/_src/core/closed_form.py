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
r"""The coefficients of the closed-form window roll.

Over a window of ``k`` steps a D-RTRL trace moves as

.. math::
  \epsilon^{e+k} = \Phi\,\epsilon^e + \sum_t c_t \otimes x^t,\qquad
  \Phi = D^{e+k} \cdots D^{e+1},\quad c_t = \Psi_t D_f^t,\quad
  \Psi_t = D^{e+k} \cdots D^{t+1}

(``docs/design.md``, "The closed-form window roll"). Every coefficient is
output-sized (``S x S`` blocks per position) and comes from a backward
recursion over the window's records: :math:`\Psi \leftarrow \Psi D^t`
from the identity. :func:`backward` runs all of a window's recursions (every
group's, every filtered readout's) in one reverse scan.
"""

from typing import Any, Callable, Hashable, Mapping, NamedTuple, Sequence, TypeVar

import jax
from jax import lax
import jax.numpy as jnp

from haiku_etp._src.core import backend

_K = TypeVar("_K", bound=Hashable)


def block_product(a: jax.Array, b: jax.Array) -> jax.Array:
  """``a @ b`` of ``(..., S, S)`` blocks, position by position."""
  if not backend.cpu_tuned():
    return jnp.einsum("...ab,...bc->...ac", a, b)
  out = a[..., :, 0:1] * b[..., 0:1, :]
  for j in range(1, a.shape[-1]):
    out = out + a[..., :, j : j + 1] * b[..., j : j + 1, :]
  return out


def transpose_blocks(a: jax.Array) -> jax.Array:
  """``(..., S, S)`` blocks transposed."""
  return jnp.swapaxes(a, -1, -2)


def mix_blocks(blocks: jax.Array, v: jax.Array) -> jax.Array:
  """``out[..., a] = sum_b blocks[..., a, b] v[..., b]``."""
  return backend.mix_states(blocks, v.astype(blocks.dtype))


class Backward(NamedTuple):
  """One backward recursion over a window's records.

  Attributes:
    init: the carry after the window's last step.
    step: ``step(carry, record) -> (carry, out)``: from the carry after a
      step to the carry before it, with the step's record; ``out`` is
      stacked over the window.
  """

  init: Any
  step: Callable[[Any, Any], tuple[Any, Any]]


def backward(
    recursions: Mapping[_K, Backward], records: Any
) -> dict[_K, tuple[Any, Any]]:
  """Runs every recursion in one reverse scan over the window's records.

  Every iteration of a loop costs a fixed overhead on a CPU that small
  blocks do not amortise, so all of a window's coefficients come from one
  loop, latest step first.

  Args:
    recursions: ``{key: Backward}``.
    records: the window's records, stacked (``k``-leading; a
      ``StepRecord`` of the compiler's, a layer above); only the
      per-position fields (``d``, ``d_f``, ``c``) are read.

  Returns:
    ``{key: (carry before the window's first step, outs (k, ...))}``.
  """
  records = records._replace(x=(), full=None, replay=None, projection=None)

  def body(
      carries: Mapping[_K, Any], rec: Any
  ) -> tuple[dict[_K, Any], dict[_K, Any]]:
    out_carries: dict[_K, Any] = {}
    outs: dict[_K, Any] = {}
    for key, rec_fn in recursions.items():
      out_carries[key], outs[key] = rec_fn.step(carries[key], rec)
    return out_carries, outs

  init = {key: r.init for key, r in recursions.items()}
  carries, outs = lax.scan(body, init, records, reverse=True)
  return {key: (carries[key], outs[key]) for key in recursions}


def group_recursion(
    d_shape: Sequence[int],
    dtype: "jax.typing.DTypeLike",
    members: tuple[int, Sequence[tuple[int, int]]],
) -> Backward:
  r"""A group's :math:`\Psi` recursion: ``Psi <- Psi D^t`` from the
  identity, with ``c_t = Psi D_f^t`` for each ``(relation, position in its
  groups)`` of ``members``; the final carry is :math:`\Phi`.

  Args:
    d_shape: the shape of one step's blocks ``(*V, S, S)``.
    dtype: their dtype.
    members: ``(g, [(r, n), ...])``: the group and its relations.
  """
  g, rels = members
  eye = jnp.broadcast_to(jnp.eye(d_shape[-1], dtype=dtype), tuple(d_shape))

  def step(psi: jax.Array, rec: Any) -> tuple[jax.Array, list[jax.Array]]:
    cs = [mix_blocks(psi, rec.d_f[r][n]) for r, n in rels]
    return block_product(psi, rec.d[g].astype(dtype)), cs

  return Backward(eye, step)
