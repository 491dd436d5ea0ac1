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
"""The ops' documented errors for scalar biases, and the JVP rules with every
tangent zero."""

from absl.testing import absltest
import jax
from jax.interpreters import ad
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.ops import conv
from haiku_etp._src.ops import dense
from haiku_etp._src.ops import sparse


class ScalarBiasTest(absltest.TestCase):
  """A Python scalar bias is a bias of the wrong shape (a ValueError)."""

  def test_dense(self):
    with self.assertRaisesRegex(ValueError, r"must have shape \(4,\)"):
      dense.dense(jnp.ones((2, 3)), jnp.ones((3, 4)), 0.5)

  def test_sparse(self):
    c = sparse.Connectivity.from_mask(np.eye(3, dtype=bool))
    with self.assertRaisesRegex(ValueError, r"must have shape \(3,\)"):
      sparse.sparse(jnp.ones((2, 3)), jnp.ones((c.nnz,)), c, 0.5)

  def test_conv(self):
    with self.assertRaisesRegex(ValueError, r"must have shape \(2,\)"):
      conv.conv(jnp.ones((1, 1, 5)), jnp.ones((2, 1, 3)), 0.5)


class ZeroTangentsTest(absltest.TestCase):
  """With every tangent zero, a JVP rule returns a zero of the output's
  type."""

  def test_etp_primitive(self):
    prim = dense.etp_batched_dense_p
    x, w = jnp.ones((2, 3)), jnp.ones((3, 4))
    zeros = [ad.Zero(jax.typeof(v).to_tangent_aval()) for v in (x, w)]
    rule = ad.primitive_jvps[prim]
    out, t_out = rule((x, w), zeros, has_bias=False)
    self.assertIsInstance(t_out, ad.Zero)
    self.assertEqual(t_out.aval.shape, out.shape)

  def test_sparse_product(self):
    c = sparse.Connectivity.from_mask(np.eye(3, dtype=bool))
    w, x2 = jnp.ones((c.nnz,)), jnp.ones((2, 3))
    zeros = [ad.Zero(jax.typeof(v).to_tangent_aval()) for v in (w, x2)]
    out, t_out = sparse._product_jvp((w, x2), zeros, connectivity=c)
    self.assertIsInstance(t_out, ad.Zero)
    self.assertEqual(t_out.aval.shape, out.shape)


if __name__ == "__main__":
  absltest.main()
