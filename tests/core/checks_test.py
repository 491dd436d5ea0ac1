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
"""The boundary checks: chex's assertions raised with the library's words."""

from absl.testing import absltest
import jax
import jax.numpy as jnp

from haiku_etp._src.core import checks


class ChecksTest(absltest.TestCase):

  def test_failure_is_a_value_error_with_the_message_alone(self):
    x = jnp.ones((2, 3))
    for check, args in (
        (checks.assert_rank, (x, 3)),
        (checks.assert_rank, (x, {0, 1})),
        (checks.assert_shape, (x, (2, 4))),
        (checks.assert_axis_dimension, (x, 1, 5)),
        (checks.assert_tree_shape_prefix, ({"a": x}, (3,))),
    ):
      with self.subTest(check.__name__):
        with self.assertRaises(ValueError) as caught:
          check(*args, custom_message="x is wrong: pass y.")
        self.assertEqual(str(caught.exception), "x is wrong: pass y.")
        self.assertIsNone(caught.exception.__cause__)

  def test_passing_checks_and_wildcards(self):
    x = jnp.ones((2, 3))
    checks.assert_rank(x, 2, custom_message="")
    checks.assert_rank(x, {1, 2}, custom_message="")
    checks.assert_shape(x, (2, None), custom_message="")
    checks.assert_axis_dimension(x, -1, 3, custom_message="")
    checks.assert_tree_shape_prefix(
        {"a": x, "b": x[:, :1]}, (2,), custom_message=""
    )

  def test_static_shapes_under_jit(self):
    def f(x):
      checks.assert_rank(x, 1, custom_message="a vector, please")
      return x * 2

    self.assertEqual(jax.jit(f)(jnp.ones(3)).shape, (3,))
    with self.assertRaisesRegex(ValueError, "^a vector, please$"):
      jax.jit(f)(jnp.ones((3, 1)))


if __name__ == "__main__":
  absltest.main()
