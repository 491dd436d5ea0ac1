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
output-sized: ``S x S`` blocks per position. They come from suffix products
of the window's blocks, computed here with ``lax.associative_scan``: a few
whole-window elementwise passes (``log2 k`` levels) instead of ``k``
iterations of a loop, which on a CPU cost more in per-iteration overhead
than in arithmetic when the blocks are small.
"""

import jax
from jax import lax
import jax.numpy as jnp

from haiku_etp._src import backend


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


def suffix_products(d: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(phi, psi)`` of a window's blocks ``d`` ``(k, *V, S, S)``.

  ``phi = d[k-1] ... d[0]`` and ``psi[j] = d[k-1] ... d[j+1]`` (the
  identity for ``j = k-1``): what step ``j``'s instantaneous term is
  carried through until the window ends.
  """
  suffix = lax.associative_scan(block_product, d, reverse=True)
  eye = jnp.broadcast_to(jnp.eye(d.shape[-1], dtype=d.dtype), d.shape[1:])
  psi = jnp.concatenate([suffix[1:], eye[None]], axis=0)
  return suffix[0], psi


def mix_blocks(blocks: jax.Array, v: jax.Array) -> jax.Array:
  """``out[..., a] = sum_b blocks[..., a, b] v[..., b]``."""
  return backend.mix_states(blocks, v.astype(blocks.dtype))


def window_coefficients(d: jax.Array, d_fs) -> tuple:
  """One group's ``(phi, [c per relation])`` over a window.

  Args:
    d: the group's blocks, ``(k, *V, S, S)``.
    d_fs: tail Jacobians ``(k, *V, S)``, one per relation into the group.

  Returns:
    ``phi`` ``(*V, S, S)`` and, per relation, ``c`` ``(k, *V, S)``.
  """
  phi, psi = suffix_products(d)
  return phi, [mix_blocks(psi, f) for f in d_fs]


def _compose(first, second):
  """``second`` after ``first``, affine maps ``v -> A v + b`` of blocks."""
  a1, b1 = first
  a2, b2 = second
  return block_product(a2, a1), mix_blocks(a2, b1) + b2


def backward_affine(a: jax.Array, b: jax.Array) -> jax.Array:
  """The solution of ``lam[j-1] = a[j] lam[j] + b[j]`` with ``lam[k-1] = 0``.

  Returns ``lam[j]`` for ``j = -1 .. k-1`` stacked as ``(k + 1, *V, S)``:
  row ``0`` is ``lam[-1]`` (the entry's coefficient), row ``j + 1`` is
  ``lam[j]``. ``a`` is ``(k, *V, S, S)``, ``b`` is ``(k, *V, S)``.
  """
  _, lam = lax.associative_scan(_compose, (a, b), reverse=True)
  return jnp.concatenate([lam, jnp.zeros_like(lam[:1])], axis=0)


def suffix_scalars(kappa: jax.Array) -> jax.Array:
  """``out[j] = kappa[j+1] ... kappa[k-1]`` for ``j = -1 .. k-1`` (``k + 1``
  values: row ``0`` is the whole product, the last row is 1)."""
  tail = jnp.cumprod(kappa[::-1])[::-1]
  return jnp.concatenate([tail, jnp.ones_like(kappa[:1])])
