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
"""Ops tests: ``dense``, ``conv`` and ``elementwise`` against ``jax.lax``.

Every op must compute what its plain JAX reference computes, under every
transformation (``jit``, ``pmap``, ``grad``, ``vmap``, ``checkpoint``,
``jvp``/``vjp``), and its primitive must stay visible in the jaxpr wherever
the transformation can keep it.
"""

import contextlib
import itertools
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import extend
from haiku_etp import testing
from tests import test_util

_DTYPES = ("float32", "float64", "bfloat16")

# rtol (also used as atol) of a comparison against the lax reference. The
# bfloat16 reference is computed in bfloat16 too.
_TOL = {"float64": 1e-12, "float32": 1e-5, "bfloat16": 2e-2}

# name, x shape, kernel shape, conv kwargs (same names as ``haiku_etp.conv``).
_CONV_CASES = (
    ("1d_default", (2, 3, 9), (4, 3, 3), {}),
    (
        "1d_nch_strings_stride_valid",
        (2, 3, 9),
        (4, 3, 3),
        dict(
            dimension_numbers=("NCH", "OIH", "NCH"),
            strides=(2,),
            padding="VALID",
        ),
    ),
    (
        "1d_nwc_explicit_lhs_dilation",
        (2, 7, 3),
        (3, 3, 4),
        dict(
            dimension_numbers=("NWC", "WIO", "NWC"),
            padding=((1, 2),),
            lhs_dilation=(2,),
        ),
    ),
    (
        "1d_nwc_rhs_dilation_same",
        (2, 8, 3),
        (3, 3, 2),
        dict(dimension_numbers=("NWC", "WIO", "NWC"), rhs_dilation=(2,)),
    ),
    (
        "2d_nchw_oihw_stride_same",
        (2, 3, 7, 6),
        (4, 3, 3, 2),
        dict(strides=(2, 1), padding="SAME"),
    ),
    (
        "2d_nchw_oihw_strings_rhs_dilation_valid",
        (2, 3, 7, 6),
        (4, 3, 2, 2),
        dict(
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
            rhs_dilation=(2, 3),
            padding="VALID",
        ),
    ),
    (
        "2d_nhwc_hwio_explicit",
        (2, 6, 5, 3),
        (3, 2, 3, 4),
        dict(
            dimension_numbers=("NHWC", "HWIO", "NHWC"), padding=((1, 0), (2, 1))
        ),
    ),
    (
        "2d_nhwc_hwio_same_lower_stride",
        (2, 6, 5, 3),
        (2, 2, 3, 4),
        dict(
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            padding="SAME_LOWER",
            strides=(2, 2),
        ),
    ),
    (
        "2d_nchw_hwio_nhwc_mixed",
        (2, 3, 6, 5),
        (3, 2, 3, 4),
        dict(dimension_numbers=("NCHW", "HWIO", "NHWC")),
    ),
    (
        "2d_conv_dimension_numbers",
        (2, 6, 5, 3),
        (2, 3, 3, 4),
        dict(
            dimension_numbers=lax.conv_dimension_numbers(
                (2, 6, 5, 3), (2, 3, 3, 4), ("NHWC", "HWIO", "NHWC")
            ),
            strides=(1, 2),
        ),
    ),
    (
        "2d_custom_permutation",
        (2, 5, 3, 6),
        (3, 3, 2, 4),
        dict(
            dimension_numbers=("NHCW", "HIWO", "CNHW"),
            strides=(1, 2),
            rhs_dilation=(2, 1),
        ),
    ),
    (
        "2d_lhs_rhs_dilation_stride",
        (2, 3, 5, 4),
        (4, 3, 3, 2),
        dict(
            strides=(2, 1),
            padding=((2, 1), (0, 1)),
            lhs_dilation=(2, 2),
            rhs_dilation=(1, 2),
        ),
    ),
    (
        "2d_feature_groups",
        (2, 4, 6, 5),
        (6, 2, 3, 3),
        dict(feature_group_count=2, padding=((1, 0), (2, 1))),
    ),
    (
        "2d_feature_groups_nhwc",
        (2, 6, 5, 4),
        (3, 3, 2, 6),
        dict(dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2),
    ),
    (
        "2d_batch_groups",
        (4, 3, 6, 5),
        (6, 3, 3, 2),
        dict(batch_group_count=2, padding="VALID"),
    ),
    (
        "3d_ndhwc_dhwio",
        (2, 4, 5, 4, 2),
        (2, 3, 2, 2, 3),
        dict(dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), strides=(1, 2, 1)),
    ),
)

_CONV_BY_NAME = {case[0]: case for case in _CONV_CASES}

# Cases whose batch axis a ``vmap`` over ``x`` is folded into: one per input
# and output layout (where the batch axis sits), plus dimension numbers given
# as a ``ConvDimensionNumbers``, strides, dilations and feature groups spread
# over them. The batch-group case decomposes instead (``VmapTest``).
_FOLDABLE_CONV_CASES = tuple(
    _CONV_BY_NAME[name]
    for name in (
        "1d_nch_strings_stride_valid",
        "1d_nwc_rhs_dilation_same",
        "2d_lhs_rhs_dilation_stride",
        "2d_feature_groups_nhwc",
        "2d_nchw_hwio_nhwc_mixed",
        "2d_conv_dimension_numbers",
        "2d_custom_permutation",
        "3d_ndhwc_dhwio",
    )
)

_ELEMENTWISE_FNS = (
    ("identity", None),
    ("exp", jnp.exp),
    ("sigmoid", jax.nn.sigmoid),
)


def _x64_scope(dtype_name):
  """Enables 64-bit types for ``float64`` only, without leaking the flag."""
  if dtype_name == "float64":
    return jax.enable_x64(True)
  return contextlib.nullcontext()


def _rand(shape, dtype, seed):
  """Standard normal values of ``dtype`` (call inside ``_x64_scope``)."""
  values = np.random.RandomState(seed).standard_normal(shape)
  return jnp.asarray(values, dtype=dtype)


def _assert_close(actual, expected, dtype_name):
  tol = _TOL[dtype_name]
  np.testing.assert_allclose(
      np.asarray(actual, np.float64),
      np.asarray(expected, np.float64),
      rtol=tol,
      atol=tol,
  )


def _assert_tree_close(actual, expected, dtype_name):
  chex.assert_trees_all_equal_structs(actual, expected)
  for a, e in zip(
      jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)
  ):
    chex.assert_equal_shape((a, e))
    _assert_close(a, e, dtype_name)


def _conv_specs(x_shape, k_shape, kwargs):
  return lax.conv_dimension_numbers(
      x_shape, k_shape, kwargs.get("dimension_numbers")
  )


def _num_out(x_shape, k_shape, kwargs):
  return k_shape[_conv_specs(x_shape, k_shape, kwargs).rhs_spec[0]]


def _lax_conv(
    x,
    kernel,
    bias=None,
    *,
    strides=None,
    padding="SAME",
    lhs_dilation=None,
    rhs_dilation=None,
    feature_group_count=1,
    batch_group_count=1,
    dimension_numbers=None,
):
  """Reference: ``lax.conv_general_dilated`` plus a channel-axis bias."""
  n = x.ndim - 2
  y = lax.conv_general_dilated(
      x,
      kernel,
      window_strides=(1,) * n if strides is None else strides,
      padding=padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count,
  )
  if bias is not None:
    channel_axis = lax.conv_dimension_numbers(
        x.shape, kernel.shape, dimension_numbers
    ).out_spec[1]
    shape = [1] * y.ndim
    shape[channel_axis] = bias.shape[0]
    y = y + jnp.reshape(bias, shape)
  return y


def _lax_dense(x, w, b=None):
  y = jnp.matmul(x, w)
  return y if b is None else y + b


def _lax_elementwise(w, fn=None):
  return w if fn is None else fn(w)


def _conv_args(x_shape, k_shape, kwargs, dtype, seed=0):
  """Returns ``(x, kernel, bias)`` for one conv case."""
  x = _rand(x_shape, dtype, seed)
  kernel = _rand(k_shape, dtype, seed + 1)
  bias = _rand((_num_out(x_shape, k_shape, kwargs),), dtype, seed + 2)
  return x, kernel, bias


def _dense_args(batched, dtype, seed=0):
  """Returns ``(x, w, b)`` with ``x`` of shape ``(3, 5)`` or ``(5,)``."""
  x = _rand((3, 5) if batched else (5,), dtype, seed)
  w = _rand((5, 4), dtype, seed + 1)
  b = _rand((4,), dtype, seed + 2)
  return x, w, b


_primitive_names = test_util.primitive_names


def _top_level_names(jaxpr):
  return {eqn.primitive.name for eqn in jaxpr.jaxpr.eqns}


def _conv_named():
  """Every conv case once, with bias and dtype rotating over their product.

  The bias lands on a layout-dependent axis; every case is also checked with
  a bias in float64 by ``GradTest.test_conv_grad``. Without a bias, and in
  another dtype, the op binds the same conv for every layout, so each
  (bias, dtype) pair is checked on some of the cases, not on all of them.
  """
  combos = list(itertools.product((True, False), _DTYPES))
  out = []
  for i, (name, x_shape, k_shape, kwargs) in enumerate(_CONV_CASES):
    with_bias, dtype = combos[i % len(combos)]
    suffix = ("_bias" if with_bias else "_nobias") + f"_{dtype}"
    out.append((name + suffix, x_shape, k_shape, kwargs, with_bias, dtype))
  return out


class ForwardTest(chex.TestCase):
  """Forward values against the ``jax.lax`` / ``jnp`` references."""

  @parameterized.named_parameters(*_conv_named())
  def test_conv(self, x_shape, k_shape, kwargs, with_bias, dtype_name):
    with _x64_scope(dtype_name):
      dtype = jnp.dtype(dtype_name)
      x, kernel, bias = _conv_args(x_shape, k_shape, kwargs, dtype)
      bias = bias if with_bias else None
      y = haiku_etp.conv(x, kernel, bias, **kwargs)
      expected = _lax_conv(x, kernel, bias, **kwargs)
      self.assertEqual(y.dtype, dtype)
      self.assertEqual(expected.dtype, dtype)
      chex.assert_equal_shape((y, expected))
      _assert_close(y, expected, dtype_name)

  def test_conv_bias_broadcasts_on_output_channel_axis(self):
    """With a CNHW output the bias must land on axis 0, not axis 1."""
    x_shape, k_shape = (2, 5, 3, 6), (3, 3, 2, 4)
    dn = ("NHCW", "HIWO", "CNHW")
    x = jnp.zeros(x_shape)
    kernel = jnp.zeros(k_shape)
    bias = jnp.arange(4.0)
    y = haiku_etp.conv(x, kernel, bias, dimension_numbers=dn)
    self.assertEqual(y.shape, (4, 2, 5, 6))
    np.testing.assert_array_equal(
        y, jnp.broadcast_to(bias[:, None, None, None], y.shape)
    )

  def test_conv_default_strides_and_padding(self):
    x, kernel, _ = _conv_args((2, 3, 6, 5), (4, 3, 3, 3), {}, jnp.float32)
    y = haiku_etp.conv(x, kernel)
    expected = lax.conv_general_dilated(x, kernel, (1, 1), "SAME")
    self.assertEqual(y.shape, (2, 4, 6, 5))
    _assert_close(y, expected, "float32")

  @parameterized.named_parameters(
      (
          (
              f"{'batched' if batched else 'unbatched'}"
              f"_{'bias' if with_bias else 'nobias'}_{dtype}"
          ),
          batched,
          with_bias,
          dtype,
      )
      for batched, with_bias, dtype in test_util.pairwise(
          (True, False), (True, False), _DTYPES
      )
  )
  def test_dense(self, batched, with_bias, dtype_name):
    with _x64_scope(dtype_name):
      dtype = jnp.dtype(dtype_name)
      x, w, b = _dense_args(batched, dtype)
      b = b if with_bias else None
      y = haiku_etp.dense(x, w, b)
      expected = _lax_dense(x, w, b)
      self.assertEqual(y.dtype, dtype)
      self.assertEqual(y.shape, (3, 4) if batched else (4,))
      _assert_close(y, expected, dtype_name)

  @parameterized.named_parameters(
      (f"{fn_name}_{dtype}", fn, dtype)
      for (fn_name, fn), dtype in itertools.product(_ELEMENTWISE_FNS, _DTYPES)
  )
  def test_elementwise(self, fn, dtype_name):
    with _x64_scope(dtype_name):
      dtype = jnp.dtype(dtype_name)
      w = _rand((2, 3), dtype, 0)
      y = haiku_etp.elementwise(w, fn)
      expected = _lax_elementwise(w, fn)
      self.assertEqual(y.dtype, dtype)
      self.assertEqual(y.shape, w.shape)
      _assert_close(y, expected, dtype_name)


class VariantsTest(chex.TestCase):
  """Values eagerly, under ``jit`` and under ``pmap`` (chex variants), once
  per op.

  Eager values are checked by ``ForwardTest`` and ``GradTest``; the ops lower
  the same way for every layout, so one case per primitive is compiled here.
  """

  def setUp(self):
    super().setUp()
    chex.assert_devices_available(4, "cpu", not_less_than=True)

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  def test_conv(self):
    _, x_shape, k_shape, kwargs = _CONV_BY_NAME["2d_custom_permutation"]
    x, kernel, bias = _conv_args(x_shape, k_shape, kwargs, jnp.float32)
    fn = self.variant(lambda x, k, b: haiku_etp.conv(x, k, b, **kwargs))
    y = fn(x, kernel, bias)
    expected = _lax_conv(x, kernel, bias, **kwargs)
    chex.assert_equal_shape((y, expected))
    _assert_close(y, expected, "float32")

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  @parameterized.named_parameters(
      ("batched_bias", True, True), ("unbatched_nobias", False, False)
  )
  def test_dense(self, batched, with_bias):
    x, w, b = _dense_args(batched, jnp.float32)
    if with_bias:
      y = self.variant(haiku_etp.dense)(x, w, b)
    else:
      y = self.variant(haiku_etp.dense)(x, w)
    expected = _lax_dense(x, w, b if with_bias else None)
    chex.assert_equal_shape((y, expected))
    _assert_close(y, expected, "float32")

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  def test_elementwise(self):
    w = _rand((2, 3), jnp.float32, 0)
    y = self.variant(lambda w: haiku_etp.elementwise(w, jax.nn.sigmoid))(w)
    _assert_close(y, jax.nn.sigmoid(w), "float32")

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  def test_conv_grad(self):
    _, x_shape, k_shape, kwargs = _CONV_BY_NAME["2d_custom_permutation"]
    x, kernel, bias = _conv_args(x_shape, k_shape, kwargs, jnp.float32)

    def loss(conv_fn):
      return lambda x, k, b: jnp.sum(jnp.sin(conv_fn(x, k, b, **kwargs)))

    grads = self.variant(jax.grad(loss(haiku_etp.conv), argnums=(0, 1, 2)))(
        x, kernel, bias
    )
    expected = jax.grad(loss(_lax_conv), argnums=(0, 1, 2))(x, kernel, bias)
    _assert_tree_close(grads, expected, "float32")

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  def test_dense_grad(self):
    x, w, b = _dense_args(True, jnp.float32)

    def loss(dense_fn):
      return lambda x, w, b: jnp.sum(jnp.tanh(dense_fn(x, w, b)))

    grads = self.variant(jax.grad(loss(haiku_etp.dense), argnums=(0, 1, 2)))(
        x, w, b
    )
    expected = jax.grad(loss(_lax_dense), argnums=(0, 1, 2))(x, w, b)
    _assert_tree_close(grads, expected, "float32")


class GradTest(chex.TestCase):
  """``grad``, ``jvp``, ``vjp``, nested ``jit`` and ``checkpoint`` values."""

  @parameterized.named_parameters(*_CONV_CASES)
  def test_conv_value_and_grad(self, x_shape, k_shape, kwargs):
    """Every case's value with a bias and its gradient, in float64 under jit.

    Eager gradients are checked by ``test_conv_jvp_vjp``.
    """
    with jax.enable_x64(True):
      x, kernel, bias = _conv_args(x_shape, k_shape, kwargs, jnp.float64)
      y_shape = jax.eval_shape(
          lambda *a: _lax_conv(*a, **kwargs), x, kernel, bias
      ).shape
      cot = _rand(y_shape, jnp.float64, 7)

      def value_and_grad(conv_fn):
        loss = lambda x, k, b: jnp.sum(conv_fn(x, k, b, **kwargs) * cot)
        return lambda *a: (
            conv_fn(*a, **kwargs),
            jax.grad(loss, argnums=(0, 1, 2))(*a),
        )

      both = test_util.fast_jit(
          lambda *a: (
              value_and_grad(haiku_etp.conv)(*a),
              value_and_grad(_lax_conv)(*a),
          )
      )
      (y, grads), (expected_y, expected) = both(x, kernel, bias)
      self.assertEqual(y.dtype, jnp.float64)
      chex.assert_equal_shape((y, expected_y))
      _assert_close(y, expected_y, "float64")
      _assert_tree_close(grads, expected, "float64")

  @parameterized.product(batched=(True, False), with_bias=(True, False))
  def test_dense_grad(self, batched, with_bias):
    with jax.enable_x64(True):
      x, w, b = _dense_args(batched, jnp.float64)
      argnums = (0, 1, 2) if with_bias else (0, 1)
      args = (x, w, b) if with_bias else (x, w)

      def loss(dense_fn):
        return lambda *a: jnp.sum(jnp.sin(dense_fn(*a)))

      grads = jax.grad(loss(haiku_etp.dense), argnums=argnums)(*args)
      expected = jax.grad(loss(_lax_dense), argnums=argnums)(*args)
      _assert_tree_close(grads, expected, "float64")

  @parameterized.named_parameters(*_ELEMENTWISE_FNS)
  def test_elementwise_grad(self, fn):
    with jax.enable_x64(True):
      w = _rand((2, 3), jnp.float64, 0)
      loss = lambda op: lambda w: jnp.sum(jnp.sin(op(w, fn)))
      _assert_tree_close(
          jax.grad(loss(haiku_etp.elementwise))(w),
          jax.grad(loss(_lax_elementwise))(w),
          "float64",
      )

  @parameterized.named_parameters(
      *(
          _CONV_BY_NAME[n]
          for n in (
              "2d_custom_permutation",
              "2d_batch_groups",
              "1d_nwc_explicit_lhs_dilation",
          )
      )
  )
  def test_conv_jvp_vjp(self, x_shape, k_shape, kwargs):
    with jax.enable_x64(True):
      primals = _conv_args(x_shape, k_shape, kwargs, jnp.float64)
      tangents = _conv_args(x_shape, k_shape, kwargs, jnp.float64, seed=10)
      fn = lambda x, k, b: haiku_etp.conv(x, k, b, **kwargs)
      ref = lambda x, k, b: _lax_conv(x, k, b, **kwargs)
      _assert_tree_close(
          jax.jvp(fn, primals, tangents),
          jax.jvp(ref, primals, tangents),
          "float64",
      )
      y, fn_vjp = jax.vjp(fn, *primals)
      y_ref, ref_vjp = jax.vjp(ref, *primals)
      _assert_close(y, y_ref, "float64")
      cot = _rand(y.shape, jnp.float64, 20)
      _assert_tree_close(fn_vjp(cot), ref_vjp(cot), "float64")

  @parameterized.parameters(True, False)
  def test_dense_jvp_vjp(self, batched):
    with jax.enable_x64(True):
      primals = _dense_args(batched, jnp.float64)
      tangents = _dense_args(batched, jnp.float64, seed=10)
      _assert_tree_close(
          jax.jvp(haiku_etp.dense, primals, tangents),
          jax.jvp(_lax_dense, primals, tangents),
          "float64",
      )
      y, fn_vjp = jax.vjp(haiku_etp.dense, *primals)
      _, ref_vjp = jax.vjp(_lax_dense, *primals)
      cot = _rand(y.shape, jnp.float64, 20)
      _assert_tree_close(fn_vjp(cot), ref_vjp(cot), "float64")

  def test_elementwise_jvp_vjp(self):
    with jax.enable_x64(True):
      w = _rand((2, 3), jnp.float64, 0)
      t = _rand((2, 3), jnp.float64, 1)
      fn = lambda w: haiku_etp.elementwise(w, jax.nn.sigmoid)
      _assert_tree_close(
          jax.jvp(fn, (w,), (t,)),
          jax.jvp(jax.nn.sigmoid, (w,), (t,)),
          "float64",
      )
      _, fn_vjp = jax.vjp(fn, w)
      _, ref_vjp = jax.vjp(jax.nn.sigmoid, w)
      _assert_tree_close(fn_vjp(t), ref_vjp(t), "float64")

  def test_jvp_with_symbolic_zero_tangents(self):
    """Differentiating one operand leaves the others' tangents zero."""
    with jax.enable_x64(True):
      x, w, b = _dense_args(True, jnp.float64)
      tw = _rand(w.shape, jnp.float64, 3)
      y, ty = jax.jvp(lambda w: haiku_etp.dense(x, w, b), (w,), (tw,))
      _assert_close(y, _lax_dense(x, w, b), "float64")
      _assert_close(ty, x @ tw, "float64")

  def test_second_order_grad(self):
    with jax.enable_x64(True):
      w = _rand((3,), jnp.float64, 0)
      hess = test_util.fast_jit(
          jax.hessian(lambda w: jnp.sum(haiku_etp.elementwise(w, jnp.exp) ** 2))
      )(w)
      _assert_close(hess, jnp.diag(4.0 * jnp.exp(2.0 * w)), "float64")

  def test_nested_jit(self):
    _, x_shape, k_shape, kwargs = _CONV_BY_NAME["2d_custom_permutation"]
    x, kernel, bias = _conv_args(x_shape, k_shape, kwargs, jnp.float32)
    fn = jax.jit(jax.jit(lambda x, k, b: haiku_etp.conv(x, k, b, **kwargs)))
    _assert_close(
        fn(x, kernel, bias), _lax_conv(x, kernel, bias, **kwargs), "float32"
    )
    xd, w, b = _dense_args(False, jnp.float32)
    _assert_close(
        jax.jit(jax.jit(haiku_etp.dense))(xd, w, b),
        _lax_dense(xd, w, b),
        "float32",
    )
    inner = jax.jit(lambda w: haiku_etp.elementwise(w, jnp.exp))
    _assert_close(
        jax.jit(lambda w: inner(w) * 2.0)(w), 2.0 * jnp.exp(w), "float32"
    )

  def test_checkpoint_conv(self):
    with jax.enable_x64(True):
      _, x_shape, k_shape, kwargs = _CONV_BY_NAME["2d_feature_groups"]
      args = _conv_args(x_shape, k_shape, kwargs, jnp.float64)
      fn = jax.checkpoint(lambda x, k, b: haiku_etp.conv(x, k, b, **kwargs))
      ref = lambda x, k, b: _lax_conv(x, k, b, **kwargs)
      _assert_close(fn(*args), ref(*args), "float64")
      loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))
      grads = test_util.fast_jit(
          lambda *a: (
              jax.grad(loss(fn), argnums=(0, 1, 2))(*a),
              jax.grad(loss(ref), argnums=(0, 1, 2))(*a),
          )
      )
      _assert_tree_close(*grads(*args), "float64")

  def test_checkpoint_dense_and_elementwise(self):
    with jax.enable_x64(True):
      x, w, b = _dense_args(True, jnp.float64)
      tau = _rand((4,), jnp.float64, 5)

      def model(op_dense, op_elementwise):
        def f(x, w, b, tau):
          return jnp.sum(
              jnp.tanh(op_dense(x, w, b)) * op_elementwise(tau, jax.nn.sigmoid)
          )

        return f

      fn = jax.checkpoint(model(haiku_etp.dense, haiku_etp.elementwise))
      ref = model(_lax_dense, _lax_elementwise)
      _assert_close(fn(x, w, b, tau), ref(x, w, b, tau), "float64")
      grads = test_util.fast_jit(
          lambda *a: (
              jax.grad(fn, argnums=(0, 1, 2, 3))(*a),
              jax.grad(ref, argnums=(0, 1, 2, 3))(*a),
          )
      )
      _assert_tree_close(*grads(x, w, b, tau), "float64")


class VmapTest(chex.TestCase):
  """``vmap`` over inputs and over weights."""

  @parameterized.named_parameters(
      (
          f"{'batched' if batched else 'unbatched'}"
          f"_{'bias' if with_bias else 'nobias'}_in{in_axis}",
          batched,
          with_bias,
          in_axis,
      )
      for batched, with_bias, in_axis in test_util.pairwise(
          (True, False), (True, False), (0, 1)
      )
  )
  def test_dense_over_x(self, batched, with_bias, in_axis):
    x, w, b = _dense_args(batched, jnp.float32)
    b = b if with_bias else None
    xs = jnp.stack([x, 2.0 * x, -x], axis=in_axis)
    ys = jax.vmap(lambda x: haiku_etp.dense(x, w, b), in_axes=in_axis)(xs)
    expected = jnp.stack([_lax_dense(v, w, b) for v in (x, 2.0 * x, -x)])
    chex.assert_equal_shape((ys, expected))
    _assert_close(ys, expected, "float32")

  def test_dense_nested_vmap_over_x(self):
    x, w, b = _dense_args(False, jnp.float32)
    xs = _rand((2, 3) + x.shape, jnp.float32, 9)
    fn = jax.vmap(jax.vmap(lambda x: haiku_etp.dense(x, w, b)))
    _assert_close(fn(xs), _lax_dense(xs, w, b), "float32")
    names = _primitive_names(jax.make_jaxpr(fn)(xs))
    self.assertIn("etp_batched_dense", names)
    self.assertNotIn("etp_dense", names)

  @parameterized.named_parameters(*_FOLDABLE_CONV_CASES)
  def test_conv_over_x(self, x_shape, k_shape, kwargs):
    x, kernel, bias = _conv_args(x_shape, k_shape, kwargs, jnp.float32)
    xs = jnp.stack([x, _rand(x_shape, jnp.float32, 11)])
    fn = lambda x: haiku_etp.conv(x, kernel, bias, **kwargs)
    ref = lambda x: _lax_conv(x, kernel, bias, **kwargs)
    with warnings.catch_warnings():
      warnings.simplefilter("error", extend.DecomposedPrimitiveWarning)
      names = _primitive_names(jax.make_jaxpr(jax.vmap(fn))(xs))
      ys, expected = test_util.fast_jit(
          lambda xs: (jax.vmap(fn)(xs), jnp.stack([ref(xs[0]), ref(xs[1])]))
      )(xs)
    self.assertIn("etp_conv", names)
    chex.assert_equal_shape((ys, expected))
    _assert_close(ys, expected, "float32")

  @parameterized.named_parameters(
      ("in1_out0", 1, 0), ("in2_out1", 2, 1), ("in0_out3", 0, 3)
  )
  def test_conv_over_x_axes(self, in_axis, out_axis):
    _, x_shape, k_shape, kwargs = _CONV_BY_NAME["2d_custom_permutation"]
    x, kernel, bias = _conv_args(x_shape, k_shape, kwargs, jnp.float32)
    samples = [x, _rand(x_shape, jnp.float32, 11), -x]
    xs = jnp.stack(samples, axis=in_axis)
    ys = jax.vmap(
        lambda x: haiku_etp.conv(x, kernel, bias, **kwargs),
        in_axes=in_axis,
        out_axes=out_axis,
    )(xs)
    expected = jnp.stack(
        [_lax_conv(v, kernel, bias, **kwargs) for v in samples], axis=out_axis
    )
    chex.assert_equal_shape((ys, expected))
    _assert_close(ys, expected, "float32")

  def test_conv_batch_groups_over_x_decomposes(self):
    _, x_shape, k_shape, kwargs = _CONV_BY_NAME["2d_batch_groups"]
    x, kernel, bias = _conv_args(x_shape, k_shape, kwargs, jnp.float32)
    xs = jnp.stack([x, -x])
    conv = lambda x: haiku_etp.conv(x, kernel, bias, **kwargs)
    fn = jax.vmap(conv)
    with testing.expect_warning(extend.DecomposedPrimitiveWarning):
      ys = fn(xs)
    with testing.expect_warning(extend.DecomposedPrimitiveWarning):
      names = _primitive_names(jax.make_jaxpr(fn)(xs))
    self.assertNotIn("etp_conv", names)
    expected = jnp.stack([_lax_conv(v, kernel, bias, **kwargs) for v in xs])
    self.assertEqual(ys.shape, (2,) + expected.shape[1:])
    _assert_close(ys, expected, "float32")
    # Unmapped, the primitive stays.
    self.assertIn("etp_conv", _top_level_names(jax.make_jaxpr(conv)(x)))

  def test_per_example_grads(self):
    """``vmap`` of ``grad`` over x gives per-example weight gradients."""
    with jax.enable_x64(True):
      x, w, b = _dense_args(True, jnp.float64)
      loss = lambda op: lambda w, b, x: jnp.sum(jnp.sin(op(x, w, b)))
      grads = jax.vmap(
          jax.grad(loss(haiku_etp.dense), argnums=(0, 1)),
          in_axes=(None, None, 0),
      )(w, b, x)
      expected = jax.vmap(
          jax.grad(loss(_lax_dense), argnums=(0, 1)), in_axes=(None, None, 0)
      )(w, b, x)
      _assert_tree_close(grads, expected, "float64")

  @parameterized.named_parameters(
      ("dense_weight", False, (None, 0, None)),
      ("dense_bias", False, (None, None, 0)),
      ("batched_dense_weight", True, (None, 0, None)),
      ("batched_dense_x_and_weight", True, (0, 0, None)),
  )
  def test_dense_over_weight_decomposes(self, batched, in_axes):
    x, w, b = _dense_args(batched, jnp.float32)
    args = [x, w, b]
    for i, axis in enumerate(in_axes):
      if axis is not None:
        args[i] = jnp.stack([args[i], 0.5 * args[i]])
    fn = jax.vmap(haiku_etp.dense, in_axes=in_axes)
    with testing.expect_warning(extend.DecomposedPrimitiveWarning):
      ys = fn(*args)
    with testing.expect_warning(extend.DecomposedPrimitiveWarning):
      names = _primitive_names(jax.make_jaxpr(fn)(*args))
    self.assertNotIn("etp_dense", names)
    self.assertNotIn("etp_batched_dense", names)
    expected = jax.vmap(_lax_dense, in_axes=in_axes)(*args)
    _assert_close(ys, expected, "float32")

  @parameterized.named_parameters(
      ("kernel", (None, 0, None)),
      ("bias", (None, None, 0)),
      ("x_and_kernel", (0, 0, None)),
  )
  def test_conv_over_weight_decomposes(self, in_axes):
    _, x_shape, k_shape, kwargs = _CONV_BY_NAME["2d_nhwc_hwio_explicit"]
    args = list(_conv_args(x_shape, k_shape, kwargs, jnp.float32))
    for i, axis in enumerate(in_axes):
      if axis is not None:
        args[i] = jnp.stack([args[i], 0.5 * args[i]])
    fn = jax.vmap(
        lambda x, k, b: haiku_etp.conv(x, k, b, **kwargs), in_axes=in_axes
    )
    with testing.expect_warning(extend.DecomposedPrimitiveWarning):
      ys = fn(*args)
    with testing.expect_warning(extend.DecomposedPrimitiveWarning):
      names = _primitive_names(jax.make_jaxpr(fn)(*args))
    self.assertNotIn("etp_conv", names)
    expected = jax.vmap(
        lambda x, k, b: _lax_conv(x, k, b, **kwargs), in_axes=in_axes
    )(*args)
    _assert_close(ys, expected, "float32")

  @parameterized.named_parameters(*_ELEMENTWISE_FNS)
  def test_elementwise_over_weight_keeps_primitive(self, fn):
    ws = _rand((3, 2, 4), jnp.float32, 0)
    vfn = jax.vmap(lambda w: haiku_etp.elementwise(w, fn), in_axes=1)
    with warnings.catch_warnings():
      warnings.simplefilter("error", extend.DecomposedPrimitiveWarning)
      ys = vfn(ws)
      names = _primitive_names(jax.make_jaxpr(vfn)(ws))
    self.assertIn("etp_elementwise", names)
    _assert_close(ys, jnp.moveaxis(_lax_elementwise(ws, fn), 1, 0), "float32")


def _jaxpr_cases():
  """``(name, fn, args, primitive, vmap_primitive, absent_after_vmap)``."""
  x, w, b = _dense_args(False, jnp.float32)
  xb = _dense_args(True, jnp.float32)[0]
  _, cx_shape, ck_shape, ckw = _CONV_BY_NAME["2d_custom_permutation"]
  cx, ck, cb = _conv_args(cx_shape, ck_shape, ckw, jnp.float32)
  tau = _rand((4,), jnp.float32, 0)
  return (
      (
          "dense",
          haiku_etp.dense,
          (x, w, b),
          "etp_dense",
          "etp_batched_dense",
          "etp_dense",
      ),
      (
          "batched_dense",
          haiku_etp.dense,
          (xb, w, b),
          "etp_batched_dense",
          "etp_batched_dense",
          "etp_dense",
      ),
      (
          "conv",
          lambda x, k, b: haiku_etp.conv(x, k, b, **ckw),
          (cx, ck, cb),
          "etp_conv",
          "etp_conv",
          None,
      ),
      (
          "elementwise",
          lambda w: haiku_etp.elementwise(w, jnp.exp),
          (tau,),
          "etp_elementwise",
          "etp_elementwise",
          None,
      ),
  )


_JAXPR_CASE_NAMES = ("dense", "batched_dense", "conv", "elementwise")


class JaxprTest(chex.TestCase):
  """The primitive stays in the jaxpr under the transformations keeping it."""

  def _case(self, name):
    (case,) = [c for c in _jaxpr_cases() if c[0] == name]
    return case[1:]

  @parameterized.parameters(*_JAXPR_CASE_NAMES)
  def test_plain(self, name):
    fn, args, prim, _, _ = self._case(name)
    self.assertIn(prim, _top_level_names(jax.make_jaxpr(fn)(*args)))

  @parameterized.parameters(*_JAXPR_CASE_NAMES)
  def test_jit(self, name):
    fn, args, prim, _, _ = self._case(name)
    jaxpr = jax.make_jaxpr(jax.jit(fn))(*args)
    self.assertNotIn(prim, _top_level_names(jaxpr))
    self.assertIn(prim, _primitive_names(jaxpr))
    self.assertIn(prim, str(jaxpr))

  @parameterized.parameters(*_JAXPR_CASE_NAMES)
  def test_nested_jit(self, name):
    fn, args, prim, _, _ = self._case(name)
    jaxpr = jax.make_jaxpr(jax.jit(jax.jit(fn)))(*args)
    self.assertIn(prim, _primitive_names(jaxpr))

  @parameterized.parameters(*_JAXPR_CASE_NAMES)
  def test_grad(self, name):
    fn, args, prim, _, _ = self._case(name)
    loss = lambda *a: jnp.sum(jnp.sin(fn(*a)))
    argnums = tuple(range(len(args)))
    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=argnums))(*args)
    self.assertIn(prim, _primitive_names(jaxpr))
    jaxpr = jax.make_jaxpr(jax.jit(jax.grad(loss, argnums=argnums)))(*args)
    self.assertIn(prim, _primitive_names(jaxpr))

  @parameterized.parameters(*_JAXPR_CASE_NAMES)
  def test_vmap_over_first_operand(self, name):
    fn, args, _, vmap_prim, absent = self._case(name)
    stacked = jnp.stack([args[0], 2.0 * args[0]])
    in_axes = (0,) + (None,) * (len(args) - 1)
    with warnings.catch_warnings():
      warnings.simplefilter("error", extend.DecomposedPrimitiveWarning)
      jaxpr = jax.make_jaxpr(jax.vmap(fn, in_axes=in_axes))(stacked, *args[1:])
    names = _primitive_names(jaxpr)
    self.assertIn(vmap_prim, names)
    if absent is not None:
      self.assertNotIn(absent, names)

  @parameterized.parameters(*_JAXPR_CASE_NAMES)
  def test_checkpoint(self, name):
    fn, args, prim, _, _ = self._case(name)
    remat = jax.checkpoint(fn)
    self.assertIn(prim, _primitive_names(jax.make_jaxpr(remat)(*args)))
    loss = lambda *a: jnp.sum(jnp.sin(remat(*a)))
    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=tuple(range(len(args)))))(
        *args
    )
    self.assertIn(prim, _primitive_names(jaxpr))

  @parameterized.parameters(*_JAXPR_CASE_NAMES)
  def test_pmap(self, name):
    fn, args, prim, _, _ = self._case(name)
    stacked = [jnp.stack([a] * jax.local_device_count()) for a in args]
    jaxpr = jax.make_jaxpr(jax.pmap(fn))(*stacked)
    self.assertIn(prim, _primitive_names(jaxpr))

  def test_vmap_over_weight_drops_primitive_with_warning(self):
    fn, (x, w, b), _, _, _ = self._case("conv")
    ks = jnp.stack([w, -w])
    vfn = jax.vmap(fn, in_axes=(None, 0, None))
    with testing.expect_warning(extend.DecomposedPrimitiveWarning, "etp_conv"):
      jaxpr = jax.make_jaxpr(vfn)(x, ks, b)
    self.assertNotIn("etp_conv", _primitive_names(jaxpr))
    with testing.expect_warning(extend.DecomposedPrimitiveWarning):
      ys = vfn(x, ks, b)
    _assert_close(ys[1], fn(x, -w, b), "float32")


def _conv_call(x_shape, k_shape, bias_shape=None, **kwargs):
  """A thunk calling ``haiku_etp.conv`` on zeros of the given shapes."""

  def thunk():
    bias = None if bias_shape is None else jnp.zeros(bias_shape)
    return haiku_etp.conv(
        jnp.zeros(x_shape), jnp.zeros(k_shape), bias, **kwargs
    )

  return thunk


def _dense_call(x_shape, w_shape, b_shape=None):
  def thunk():
    b = None if b_shape is None else jnp.zeros(b_shape)
    return haiku_etp.dense(jnp.zeros(x_shape), jnp.zeros(w_shape), b)

  return thunk


_X4, _K4 = (2, 3, 6, 5), (4, 3, 3, 3)


class ErrorTest(chex.TestCase):
  """Malformed shapes and arguments raise ``ValueError`` naming the problem."""

  @parameterized.named_parameters(
      ("dense_x_rank_3", _dense_call((2, 3, 5), (5, 4)), "rank 1 or 2"),
      ("dense_x_rank_0", _dense_call((), (5, 4)), "rank 1 or 2"),
      ("dense_w_rank_1", _dense_call((3, 5), (5,)), "Weight .* rank 2"),
      ("dense_w_rank_3", _dense_call((3, 5), (5, 4, 1)), "Weight .* rank 2"),
      (
          "dense_feature_mismatch",
          _dense_call((3, 5), (6, 4)),
          "5 features but the weight expects 6",
      ),
      (
          "dense_feature_mismatch_unbatched",
          _dense_call((5,), (4, 5)),
          "5 features but the weight expects 4",
      ),
      (
          "dense_bias_wrong_size",
          _dense_call((3, 5), (5, 4), (3,)),
          r"Bias of dense must have shape \(4,\)",
      ),
      (
          "dense_bias_wrong_rank",
          _dense_call((3, 5), (5, 4), (1, 4)),
          r"Bias of dense must have shape \(4,\).*\(1, 4\)",
      ),
      ("conv_rank_mismatch", _conv_call(_X4, (4, 3, 3)), "same rank"),
      (
          "conv_x_without_spatial_axis",
          _conv_call((2, 3), (4, 3)),
          "spatial axis",
      ),
      (
          "conv_too_few_strides",
          _conv_call(_X4, _K4, strides=(1,)),
          "strides must have 2 entries",
      ),
      (
          "conv_too_many_strides",
          _conv_call(_X4, _K4, strides=(1, 1, 1)),
          "strides must have 2 entries",
      ),
      (
          "conv_wrong_lhs_dilation",
          _conv_call(_X4, _K4, lhs_dilation=(1,)),
          "lhs_dilation must have 2 entries",
      ),
      (
          "conv_wrong_rhs_dilation",
          _conv_call(_X4, _K4, rhs_dilation=(1, 1, 1)),
          "rhs_dilation must have 2 entries",
      ),
      (
          "conv_padding_int",
          _conv_call(_X4, _K4, padding=3),
          "padding must be a string or a sequence of",
      ),
      (
          "conv_padding_triples",
          _conv_call(_X4, _K4, padding=((1, 2, 3), (0, 0))),
          "padding must be a string or a sequence of",
      ),
      (
          "conv_padding_unknown_string",
          _conv_call(_X4, _K4, padding="FULL"),
          "(?i)padding",
      ),
      (
          "conv_padding_wrong_number_of_pairs",
          _conv_call(_X4, _K4, padding=((1, 1),)),
          "(?i)pad",
      ),
      (
          "conv_bias_wrong_size",
          _conv_call(_X4, _K4, (3,)),
          r"Bias of conv must have shape \(4,\)",
      ),
      (
          "conv_bias_wrong_rank",
          _conv_call(_X4, _K4, (4, 1)),
          r"Bias of conv must have shape \(4,\)",
      ),
      (
          "conv_bias_sized_by_wrong_kernel_axis",
          _conv_call(
              (2, 6, 5, 3),
              (2, 2, 3, 4),
              (2,),
              dimension_numbers=("NHWC", "HWIO", "NHWC"),
          ),
          r"Bias of conv must have shape \(4,\)",
      ),
      (
          "conv_kernel_input_channels",
          _conv_call((2, 5, 6, 6), (4, 3, 3, 3)),
          r"kernel has 3 input channels \(axis 1 of kernel shape \(4, 3, 3, "
          r"3\)\).*must have 3 channels, but it has 5 \(axis 1 of input "
          r"shape \(2, 5, 6, 6\)\), in the default layout",
      ),
      (
          "conv_kernel_input_channels_nhwc",
          _conv_call(
              (2, 6, 5, 5),
              (2, 2, 3, 4),
              dimension_numbers=("NHWC", "HWIO", "NHWC"),
          ),
          r"kernel has 3 input channels.*but it has 5 \(axis 3.*"
          r"data format \('NHWC', 'HWIO', 'NHWC'\)",
      ),
      (
          "conv_groups_do_not_divide_outputs",
          _conv_call((2, 6, 5), (3, 3, 2), feature_group_count=2),
          r"3 output channels .* divisible by feature_group_count 2",
      ),
  )
  def test_raises(self, thunk, regex):
    with self.assertRaisesRegex(ValueError, regex):
      thunk()

  def test_elementwise_fn_changing_shape(self):
    with self.assertRaisesRegex(ValueError, "position by position"):
      haiku_etp.elementwise(jnp.zeros((2, 3)), jnp.sum)
    with self.assertRaisesRegex(ValueError, r"\(2, 3\) to \(1, 2, 3\)"):
      haiku_etp.elementwise(jnp.zeros((2, 3)), lambda w: w[None])

  def test_conv_empty_output(self):
    with self.assertRaisesRegex(ValueError, "empty output"):
      _conv_call((2, 3, 4, 4), (4, 3, 5, 3), padding="VALID")()

  @parameterized.named_parameters(
      ("cumsum", lambda w: jnp.cumsum(w, axis=-1)),
      ("sort", jnp.sort),
      ("flip", jnp.flip),
      ("softmax", jax.nn.softmax),
      ("scaled_by_sum", lambda w: w * jnp.sum(w)),
  )
  def test_elementwise_fn_mixing_positions(self, fn):
    with self.assertRaisesRegex(ValueError, "position by position.*mixes"):
      haiku_etp.elementwise(jnp.ones((2, 3)), fn)

  def test_elementwise_fn_not_callable(self):
    with self.assertRaisesRegex(ValueError, "callable"):
      haiku_etp.elementwise(jnp.zeros(3), 2.0)


class ShardMapTest(chex.TestCase):
  """The ops under ``jax.shard_map`` with the batch sharded over 4 devices."""

  def setUp(self):
    super().setUp()
    chex.assert_devices_available(4, "cpu")
    self.mesh = jax.make_mesh((4,), ("i",))

  def _sharded(self, x):
    return jax.device_put(
        x,
        jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("i")),
    )

  def test_conv_value_grad_and_jaxpr(self):
    spec = jax.sharding.PartitionSpec
    x = jnp.asarray(_rand((8, 3, 6, 5), "float32", 0))
    kernel = jnp.asarray(_rand((4, 3, 3, 3), "float32", 1))
    bias = jnp.asarray(_rand((4,), "float32", 2))
    conv = lambda x, k, b: haiku_etp.conv(x, k, b, padding="SAME")
    sharded = jax.shard_map(
        conv,
        mesh=self.mesh,
        in_specs=(spec("i"), spec(), spec()),
        out_specs=spec("i"),
    )
    xs = self._sharded(x)
    _assert_close(
        jax.jit(sharded)(xs, kernel, bias),
        _lax_conv(x, kernel, bias, padding="SAME"),
        "float32",
    )
    self.assertIn(
        "etp_conv", _primitive_names(jax.make_jaxpr(sharded)(xs, kernel, bias))
    )

    def loss(k, b):
      per_shard = lambda x, k, b: lax.psum(
          jnp.sum(jnp.tanh(conv(x, k, b)) ** 2), "i"
      )
      return jax.shard_map(
          per_shard,
          mesh=self.mesh,
          in_specs=(spec("i"), spec(), spec()),
          out_specs=spec(),
      )(xs, k, b)

    ref = lambda k, b: jnp.sum(
        jnp.tanh(_lax_conv(x, k, b, padding="SAME")) ** 2
    )
    _assert_tree_close(
        jax.jit(jax.grad(loss, (0, 1)))(kernel, bias),
        jax.grad(ref, (0, 1))(kernel, bias),
        "float32",
    )

  def test_dense_and_elementwise_grad(self):
    spec = jax.sharding.PartitionSpec
    x = jnp.asarray(_rand((8, 5), "float32", 0))
    w = jnp.asarray(_rand((5, 3), "float32", 1))
    g = jnp.asarray(_rand((3,), "float32", 2))
    model = lambda x, w, g: jnp.tanh(
        haiku_etp.dense(x, w) * haiku_etp.elementwise(g, jax.nn.sigmoid)
    )

    def loss(w, g):
      per_shard = lambda x, w, g: lax.psum(jnp.sum(model(x, w, g) ** 2), "i")
      return jax.shard_map(
          per_shard,
          mesh=self.mesh,
          in_specs=(spec("i"), spec(), spec()),
          out_specs=spec(),
      )(self._sharded(x), w, g)

    ref = lambda w, g: jnp.sum(jnp.tanh((x @ w) * jax.nn.sigmoid(g)) ** 2)
    _assert_tree_close(
        jax.jit(jax.grad(loss, (0, 1)))(w, g),
        jax.grad(ref, (0, 1))(w, g),
        "float32",
    )


if __name__ == "__main__":
  absltest.main()
