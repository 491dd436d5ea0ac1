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
"""Tests of the ETP feed-forward layers ``Linear`` and ``ConvND``/``ConvkD``.

* Parity with Haiku: ``haiku_etp.Linear``/``ConvND``/``Conv1D``/``Conv2D``/
  ``Conv3D`` create the parameters of their Haiku namesakes (same module
  names, shapes, dtypes and initialisers in the same order, hence the same
  values from the same rng, which a sample of cases draws and compares) and,
  applied to the same parameters (also after a round trip through an
  ``.npz`` checkpoint), give Haiku's outputs, over data formats, strides,
  rates, paddings, feature groups, masks and unbatched inputs; eagerly, and
  under ``jit`` once per class.
* Integer and boolean inputs (spikes) are cast to the default float dtype.
* ``split`` equals ``jnp.split`` of the full output along the channel axis.
* The compiler sees one relation per ETP op (``num`` for ``split``) and a
  leaky integrator on top of each layer is D-RTRL exact; in float64 D-RTRL
  equals whole-sequence BPTT on such integrators, for windows 1 and 3.
* Bad arguments and inputs raise ``ValueError`` with a useful message.
"""

import os
import tempfile
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import testing
from tests import test_util

_RTOL = 1e-5
_ATOL = 1e-6
_STEPS = 5

# Module name Haiku gives each class (ours must coincide).
_MODULE_NAMES = {
    "Linear": "linear",
    "ConvND": "conv_nd",
    "Conv1D": "conv1_d",
    "Conv2D": "conv2_d",
    "Conv3D": "conv3_d",
}


def _mask(shape, seed=0):
  """A 0/1 mask with some zeros and some ones."""
  mask = np.random.RandomState(seed).uniform(size=shape) > 0.3
  mask.flat[0] = False
  mask.flat[-1] = True
  return jnp.asarray(mask, jnp.float32)


def _case(name, cls, kwargs, shape, sample=False, jit=False):
  """A parity case; ``sample`` draws Haiku's values, ``jit`` also jits."""
  return dict(
      testcase_name=name,
      cls=cls,
      kwargs=kwargs,
      shape=shape,
      sample=sample,
      jit=jit,
  )


_PARITY_CASES = (
    # Linear over input ranks, with and without bias, custom initialisers.
    _case("linear_rank1", "Linear", dict(output_size=3), (4,)),
    _case("linear_rank2", "Linear", dict(output_size=3), (2, 4), sample=True),
    _case("linear_rank3", "Linear", dict(output_size=3), (2, 5, 4), jit=True),
    _case("linear_rank4", "Linear", dict(output_size=3), (2, 3, 2, 4)),
    _case(
        "linear_rank2_no_bias",
        "Linear",
        dict(output_size=3, with_bias=False),
        (2, 4),
    ),
    _case(
        "linear_rank3_no_bias",
        "Linear",
        dict(output_size=3, with_bias=False),
        (2, 5, 4),
    ),
    _case(
        "linear_rank3_custom_init",
        "Linear",
        dict(
            output_size=3,
            w_init=hk.initializers.RandomUniform(-1.0, 1.0),
            b_init=hk.initializers.RandomNormal(0.5),
        ),
        (2, 5, 4),
        sample=True,
    ),
    # ConvND with both generic data formats.
    _case(
        "conv_nd_channels_last",
        "ConvND",
        dict(num_spatial_dims=2, output_channels=4, kernel_shape=3),
        (2, 5, 6, 3),
        jit=True,
    ),
    _case(
        "conv_nd_channels_first",
        "ConvND",
        dict(
            num_spatial_dims=2,
            output_channels=4,
            kernel_shape=(2, 3),
            data_format="channels_first",
        ),
        (2, 3, 5, 6),
        sample=True,
    ),
    _case(
        "conv_nd_1d_channels_first",
        "ConvND",
        dict(
            num_spatial_dims=1,
            output_channels=4,
            kernel_shape=3,
            data_format="channels_first",
        ),
        (2, 3, 7),
    ),
    # Explicit layout strings.
    _case(
        "conv1d_nwc",
        "Conv1D",
        dict(output_channels=4, kernel_shape=3, data_format="NWC"),
        (2, 7, 3),
    ),
    _case(
        "conv1d_ncw",
        "Conv1D",
        dict(output_channels=4, kernel_shape=3, data_format="NCW"),
        (2, 3, 7),
        sample=True,
        jit=True,
    ),
    _case(
        "conv2d_nhwc",
        "Conv2D",
        dict(output_channels=4, kernel_shape=3, data_format="NHWC"),
        (2, 5, 6, 3),
    ),
    _case(
        "conv2d_nchw",
        "Conv2D",
        dict(output_channels=4, kernel_shape=3, data_format="NCHW"),
        (2, 3, 5, 6),
    ),
    _case(
        "conv3d_ndhwc",
        "Conv3D",
        dict(output_channels=3, kernel_shape=2, data_format="NDHWC"),
        (2, 3, 4, 3, 2),
        jit=True,
    ),
    _case(
        "conv3d_ncdhw",
        "Conv3D",
        dict(output_channels=3, kernel_shape=(2, 1, 2), data_format="NCDHW"),
        (2, 2, 3, 4, 3),
        sample=True,
    ),
    # Strides, rates and paddings.
    _case(
        "conv2d_stride2",
        "Conv2D",
        dict(output_channels=4, kernel_shape=3, stride=2),
        (2, 5, 6, 3),
    ),
    _case(
        "conv2d_stride2_nchw",
        "Conv2D",
        dict(output_channels=4, kernel_shape=3, stride=2, data_format="NCHW"),
        (2, 3, 5, 6),
        jit=True,
    ),
    _case(
        "conv2d_stride_pair",
        "Conv2D",
        dict(output_channels=4, kernel_shape=3, stride=(1, 2)),
        (2, 5, 6, 3),
    ),
    _case(
        "conv2d_rate2",
        "Conv2D",
        dict(output_channels=4, kernel_shape=2, rate=2),
        (2, 5, 6, 3),
    ),
    _case(
        "conv2d_valid",
        "Conv2D",
        dict(output_channels=4, kernel_shape=3, padding="VALID"),
        (2, 5, 6, 3),
    ),
    _case(
        "conv2d_same",
        "Conv2D",
        dict(output_channels=4, kernel_shape=2, padding="SAME"),
        (2, 5, 6, 3),
    ),
    _case(
        "conv2d_explicit_pairs",
        "Conv2D",
        dict(output_channels=4, kernel_shape=3, padding=((1, 0), (2, 1))),
        (2, 5, 6, 3),
    ),
    _case(
        "conv1d_causal_rate2",
        "Conv1D",
        dict(output_channels=4, kernel_shape=3, rate=2, padding=hk.pad.causal),
        (2, 7, 3),
    ),
    _case(
        "conv2d_causal",
        "Conv2D",
        dict(output_channels=4, kernel_shape=3, padding=hk.pad.causal),
        (2, 5, 6, 3),
    ),
    _case(
        "conv2d_pad_fn_sequence",
        "Conv2D",
        dict(
            output_channels=4,
            kernel_shape=3,
            rate=(1, 2),
            padding=(hk.pad.causal, hk.pad.full),
        ),
        (2, 5, 6, 3),
    ),
    # Feature groups, masks, unbatched inputs, no bias.
    _case(
        "conv2d_feature_groups",
        "Conv2D",
        dict(output_channels=6, kernel_shape=3, feature_group_count=2),
        (2, 5, 6, 4),
        sample=True,
    ),
    _case(
        "conv2d_feature_groups_nchw",
        "Conv2D",
        dict(
            output_channels=6,
            kernel_shape=3,
            feature_group_count=2,
            data_format="NCHW",
        ),
        (2, 4, 5, 6),
    ),
    _case(
        "conv2d_mask",
        "Conv2D",
        dict(output_channels=4, kernel_shape=3, mask=_mask((3, 3, 3, 4))),
        (2, 5, 6, 3),
    ),
    _case(
        "conv2d_mask_feature_groups",
        "Conv2D",
        dict(
            output_channels=4,
            kernel_shape=2,
            feature_group_count=2,
            mask=_mask((2, 2, 2, 4), seed=1),
        ),
        (2, 5, 6, 4),
    ),
    _case(
        "conv2d_unbatched",
        "Conv2D",
        dict(output_channels=4, kernel_shape=3),
        (5, 6, 3),
    ),
    _case(
        "conv2d_unbatched_nchw",
        "Conv2D",
        dict(output_channels=4, kernel_shape=3, data_format="NCHW"),
        (3, 5, 6),
    ),
    _case(
        "conv1d_unbatched_stride2",
        "Conv1D",
        dict(output_channels=4, kernel_shape=3, stride=2),
        (7, 3),
    ),
    _case(
        "conv2d_no_bias",
        "Conv2D",
        dict(output_channels=4, kernel_shape=3, with_bias=False),
        (2, 5, 6, 3),
    ),
    _case(
        "conv2d_no_bias_nchw",
        "Conv2D",
        dict(
            output_channels=4,
            kernel_shape=3,
            with_bias=False,
            data_format="NCHW",
        ),
        (2, 3, 5, 6),
    ),
    _case(
        "conv2d_custom_init",
        "Conv2D",
        dict(
            output_channels=4,
            kernel_shape=3,
            w_init=hk.initializers.RandomUniform(-1.0, 1.0),
            b_init=hk.initializers.RandomNormal(0.5),
        ),
        (2, 5, 6, 3),
        sample=True,
    ),
)


def _inputs(shape, seed=0, dtype=jnp.float32):
  return jnp.asarray(np.random.RandomState(seed).normal(size=shape), dtype)


def _fns(cls, kwargs):
  """``(haiku, ours)`` one-layer functions ``x -> y``."""
  return (
      lambda x: getattr(hk, cls)(**kwargs)(x),
      lambda x: getattr(haiku_etp, cls)(**kwargs)(x),
  )


def _transforms(cls, kwargs):
  """``(haiku, ours)`` transformed one-layer models."""
  return tuple(hk.transform(f) for f in _fns(cls, kwargs))


class _LayerTestCase(chex.TestCase):
  """Shared assertions."""

  def assert_same_params(self, got, want):
    """Same modules, parameter names, shapes, dtypes and values."""
    self.assertEqual(sorted(got), sorted(want))
    for module in want:
      self.assertEqual(sorted(got[module]), sorted(want[module]), msg=module)
      for name, value in want[module].items():
        self.assertEqual(got[module][name].shape, value.shape)
        self.assertEqual(got[module][name].dtype, value.dtype)
        np.testing.assert_array_equal(
            got[module][name], value, err_msg=f"{module}/{name}"
        )


class ParityTest(_LayerTestCase):
  """Same parameters and outputs as the Haiku layers."""

  @parameterized.named_parameters(*_PARITY_CASES)
  def test_matches_haiku(self, cls, kwargs, shape, sample, jit):
    x = _inputs(shape)
    theirs_fn, ours_fn = _fns(cls, kwargs)
    theirs, ours = hk.transform(theirs_fn), hk.transform(ours_fn)
    # Same parameters, initialisers and creation order as Haiku.
    want_creations = test_util.param_creations(theirs_fn, x)
    self.assertEqual(test_util.param_creations(ours_fn, x), want_creations)
    self.assertEqual(
        {name.split("/")[0] for name, *_ in want_creations},
        {_MODULE_NAMES[cls]},
    )
    if sample:
      # Hence the same values from the same rng.
      params, our_params = test_util.fast_jit(
          lambda rng: (theirs.init(rng, x), ours.init(rng, x))
      )(jax.random.PRNGKey(42))
      self.assert_same_params(our_params, params)
    else:
      params = test_util.random_params(
          jax.eval_shape(theirs.init, jax.random.PRNGKey(0), x)
      )

    want = theirs.apply(params, None, x)
    got = ours.apply(params, None, x)
    self.assertEqual(got.shape, want.shape)
    self.assertEqual(got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=_RTOL, atol=_ATOL)
    if jit:
      got = test_util.fast_jit(ours.apply)(params, None, x)
      np.testing.assert_allclose(got, want, rtol=_RTOL, atol=_ATOL)

  @parameterized.named_parameters(
      ("linear", "Linear", dict(output_size=3), (2, 4)),
      (
          "conv2d_nchw_stride2",
          "Conv2D",
          dict(output_channels=4, kernel_shape=3, stride=2, data_format="NCHW"),
          (2, 3, 5, 6),
      ),
  )
  def test_matches_haiku_float64(self, cls, kwargs, shape):
    self.enter_context(jax.enable_x64(True))
    x = _inputs(shape, dtype=jnp.float64)
    theirs, ours = _transforms(cls, kwargs)
    params, our_params = test_util.fast_jit(
        lambda rng: (theirs.init(rng, x), ours.init(rng, x))
    )(jax.random.PRNGKey(3))
    self.assert_same_params(our_params, params)
    for leaf in jax.tree_util.tree_leaves(params):
      self.assertEqual(leaf.dtype, jnp.float64)
    want = theirs.apply(params, None, x)
    got = ours.apply(params, None, x)
    self.assertEqual(got.dtype, jnp.float64)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

  def test_checkpoint_round_trip(self):
    # A Haiku model saved with np.savez loads into the ETP model.
    def model(mod):
      def fn(x):
        y = mod.Conv2D(4, 3, stride=2, data_format="NCHW")(x)
        y = jnp.transpose(jax.nn.relu(y), (0, 2, 3, 1))
        y = mod.Linear(3, name="head")(y)
        return mod.Conv1D(2, 2, padding=hk.pad.causal)(y[:, 0])

      return hk.transform(fn)

    theirs, ours = model(hk), model(haiku_etp)
    x = _inputs((2, 3, 6, 5))
    params = test_util.random_params(
        jax.eval_shape(theirs.init, jax.random.PRNGKey(7), x)
    )
    self.assertEqual(sorted(params), ["conv1_d", "conv2_d", "head"])

    tmp = self.enter_context(tempfile.TemporaryDirectory())
    path = os.path.join(tmp, "checkpoint.npz")
    np.savez(
        path,
        **{
            f"{module}::{name}": np.asarray(value)
            for module, entries in params.items()
            for name, value in entries.items()
        },
    )
    loaded = {}
    with np.load(path) as data:
      for key in data.files:
        module, name = key.split("::")
        loaded.setdefault(module, {})[name] = jnp.asarray(data[key])
    self.assert_same_params(loaded, params)
    self.assertEqual(loaded["conv2_d"]["b"].shape, (4, 1, 1))
    # The loaded tree also has the structure the ETP model builds.
    chex.assert_trees_all_equal_shapes_and_dtypes(
        loaded, jax.eval_shape(ours.init, jax.random.PRNGKey(0), x)
    )

    want = theirs.apply(params, None, x)
    got = ours.apply(loaded, None, x)
    np.testing.assert_allclose(got, want, rtol=_RTOL, atol=_ATOL)


class IntegerArgumentTest(_LayerTestCase):
  """NumPy integer sizes are accepted, as Haiku accepts them.

  Sizes computed with NumPy (``np.prod(shape)``, ``shape // 2`` on an
  array) are ``np.integer`` scalars; the Haiku layers take them.
  """

  @parameterized.named_parameters(
      ("linear", "Linear", dict(output_size=np.int64(3)), (2, 4)),
      (
          "conv2d",
          "Conv2D",
          dict(
              output_channels=np.int64(4),
              kernel_shape=np.int64(3),
              stride=np.int32(2),
              rate=np.int64(1),
              feature_group_count=np.int64(1),
          ),
          (2, 5, 6, 3),
      ),
      (
          "conv_nd",
          "ConvND",
          dict(
              num_spatial_dims=np.int64(1),
              output_channels=4,
              kernel_shape=(np.int64(3),),
          ),
          (2, 7, 3),
      ),
  )
  def test_numpy_integer_sizes(self, cls, kwargs, shape):
    x = jnp.ones(shape)
    theirs, ours = _transforms(cls, kwargs)
    rng = jax.random.PRNGKey(0)
    want = jax.eval_shape(theirs.init, rng, x)
    got = jax.eval_shape(ours.init, rng, x)  # raises ValueError today
    chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
    self.assertEqual(
        jax.eval_shape(ours.apply, want, None, x).shape,
        jax.eval_shape(theirs.apply, want, None, x).shape,
    )


class InputDtypeTest(parameterized.TestCase):
  """Integer and boolean inputs (spikes) take JAX's default float dtype."""

  @parameterized.named_parameters(
      ("linear_bool", lambda: haiku_etp.Linear(3), (2, 4), np.bool_),
      ("linear_rank3_int", lambda: haiku_etp.Linear(3), (2, 5, 4), np.int32),
      ("conv2d_bool", lambda: haiku_etp.Conv2D(3, 2), (1, 4, 4, 2), np.bool_),
  )
  def test_cast_to_float(self, make, shape, dtype):
    model = hk.transform(lambda x: make()(x))
    x = (np.arange(np.prod(shape)).reshape(shape) % 2).astype(dtype)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    for leaf in jax.tree_util.tree_leaves(shapes):
      self.assertEqual(leaf.dtype, jnp.float32)
    params = test_util.random_params(shapes)
    got = model.apply(params, None, x)
    self.assertEqual(got.dtype, jnp.float32)
    want = model.apply(params, None, x.astype(np.float32))
    np.testing.assert_array_equal(got, want)


_SPLIT_CASES = (
    ("linear_rank2", "Linear", dict(output_size=6), (2, 4), 3, -1),
    ("linear_rank3", "Linear", dict(output_size=6), (2, 5, 4), 2, -1),
    ("linear_rank1", "Linear", dict(output_size=4), (4,), 4, -1),
    (
        "conv_channels_last",
        "Conv2D",
        dict(output_channels=6, kernel_shape=3, stride=2),
        (2, 5, 6, 3),
        3,
        -1,
    ),
    (
        "conv_channels_first",
        "ConvND",
        dict(
            num_spatial_dims=2,
            output_channels=4,
            kernel_shape=(2, 3),
            data_format="channels_first",
        ),
        (2, 3, 5, 6),
        2,
        1,
    ),
    (
        "conv_channels_first_unbatched",
        "Conv1D",
        dict(output_channels=4, kernel_shape=3, data_format="NCW", rate=2),
        (3, 7),
        4,
        0,
    ),
    (
        "conv_no_bias_num1",
        "Conv2D",
        dict(output_channels=4, kernel_shape=2, with_bias=False),
        (2, 4, 4, 3),
        1,
        -1,
    ),
)


class SplitTest(_LayerTestCase):
  """``split`` is ``jnp.split`` of the full output, one op per part."""

  @parameterized.named_parameters(*_SPLIT_CASES)
  def test_split_equals_jnp_split(self, cls, kwargs, shape, num, axis):
    def fn(x):
      layer = getattr(haiku_etp, cls)(**kwargs)
      return layer(x), layer.split(x, num)

    model = hk.transform(fn)
    x = _inputs(shape)
    # Non-zero biases, so each part's slice of b is checked too.
    params = test_util.random_params(
        jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    )
    applies = [model.apply]
    if cls == "ConvND":  # One jit check is enough: the same code runs.
      applies.append(test_util.fast_jit(model.apply))
    for apply in applies:
      full, parts = apply(params, None, x)
      self.assertIsInstance(parts, tuple)
      self.assertLen(parts, num)
      want = jnp.split(full, num, axis=axis)
      for got, expected in zip(parts, want):
        self.assertEqual(got.shape, expected.shape)
        np.testing.assert_allclose(got, expected, rtol=_RTOL, atol=_ATOL)

  @parameterized.named_parameters(
      ("linear_zero", "Linear", dict(output_size=4), (2, 3), 0),
      ("linear_non_divisor", "Linear", dict(output_size=4), (2, 3), 3),
      ("linear_negative", "Linear", dict(output_size=4), (2, 3), -2),
      ("linear_float", "Linear", dict(output_size=4), (2, 3), 2.0),
      ("linear_too_many", "Linear", dict(output_size=4), (2, 3), 8),
      (
          "conv_zero",
          "Conv2D",
          dict(output_channels=4, kernel_shape=2),
          (1, 4, 4, 3),
          0,
      ),
      (
          "conv_non_divisor",
          "Conv2D",
          dict(output_channels=4, kernel_shape=2),
          (1, 4, 4, 3),
          3,
      ),
  )
  def test_bad_num(self, cls, kwargs, shape, num):
    model = hk.transform(
        lambda x: getattr(haiku_etp, cls)(**kwargs).split(x, num)
    )
    size = kwargs.get("output_size", kwargs.get("output_channels"))
    with self.assertRaisesRegex(
        ValueError, rf"num must be a positive divisor of .*{size}, got {num!r}"
    ):
      model.init(jax.random.PRNGKey(0), jnp.ones(shape))

  def test_split_with_feature_groups_raises(self):
    model = hk.transform(
        lambda x: haiku_etp.ConvND(
            2, 4, 3, feature_group_count=2, name="grouped"
        ).split(x, 2)
    )
    with self.assertRaisesRegex(
        ValueError, r"ConvND\.split needs feature_group_count == 1, got 2"
    ):
      model.init(jax.random.PRNGKey(0), jnp.ones((1, 4, 4, 4)))


# Layers under test by the compiler and the exactness tests.
_LAYERS = {
    "linear_rank2": (lambda: haiku_etp.Linear(3), (2, 4)),
    "linear_rank3": (lambda: haiku_etp.Linear(3), (2, 5, 4)),
    "linear_rank4": (
        lambda: haiku_etp.Linear(3, with_bias=False),
        (2, 3, 2, 4),
    ),
    "conv_nd_channels_last": (lambda: haiku_etp.ConvND(2, 3, 3), (2, 4, 4, 2)),
    "conv2d_nchw_stride2": (
        lambda: haiku_etp.Conv2D(3, 3, stride=2, data_format="NCHW"),
        (2, 2, 5, 5),
    ),
    "conv1d_causal_rate2": (
        lambda: haiku_etp.Conv1D(3, 3, rate=2, padding=hk.pad.causal),
        (2, 6, 2),
    ),
    "conv2d_feature_groups": (
        lambda: haiku_etp.Conv2D(4, 2, feature_group_count=2),
        (2, 4, 4, 2),
    ),
    "conv2d_mask_valid": (
        lambda: haiku_etp.Conv2D(
            3, 2, padding="VALID", mask=_mask((2, 2, 2, 3))
        ),
        (2, 4, 4, 2),
    ),
    "conv3d_ncdhw": (
        lambda: haiku_etp.Conv3D(2, 2, data_format="NCDHW"),
        (2, 2, 3, 3, 3),
    ),
}


def _leaky(make_layer, leak):
  """``v_t = leak * v_tm1 + layer(x_t)`` with ``v`` in hidden state."""

  def step(x):
    y = make_layer()(x)
    v = haiku_etp.get_hidden_state("v", y.shape, y.dtype)
    v = leak * v + y
    haiku_etp.set_hidden_state("v", v)
    return v

  return hk.transform_with_state(step)


def _leaky_split(make_layer, num):
  """One leaky integrator ``v{k}`` per part of ``layer.split(x, num)``."""

  def step(x):
    outs = []
    for k, y in enumerate(make_layer().split(x, num)):
      v = haiku_etp.get_hidden_state(f"v{k}", y.shape, y.dtype)
      v = 0.8 * v + y
      haiku_etp.set_hidden_state(f"v{k}", v)
      outs.append(v)
    return outs

  return hk.transform_with_state(step)


def _compile(model, shape):
  """The compiled step; only shapes matter, so no parameter is drawn."""
  x = jnp.ones(shape)
  params, state = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return haiku_etp.d_rtrl(model).compile(params, state, None, x)


class CompilerViewTest(parameterized.TestCase):
  """What the compiler reads from the layers."""

  @parameterized.named_parameters(*sorted(_LAYERS.items()))
  def test_leaky_integrator_is_exact(self, make_and_shape):
    make_layer, shape = make_and_shape
    compiled = _compile(_leaky(make_layer, 0.8), shape)
    self.assertTrue(compiled.drtrl_exact, msg=compiled.report())
    self.assertEmpty([d for d in compiled.diagnostics if d.level == "warning"])
    self.assertLen(compiled.groups, 1)
    self.assertLen(compiled.relations, 1)
    (relation,) = compiled.relations
    self.assertEqual(relation.groups, (0,))
    module = relation.key.split("/")[0]
    self.assertEqual(relation.key, f"{module}/w")
    self.assertEqual(relation.weights["weight"], (f"{module}/w",))
    self.assertEqual(relation.y_shape, compiled.groups[0].shape)

  @parameterized.named_parameters(
      ("linear_rank2", lambda: haiku_etp.Linear(6), (2, 4), 3),
      ("linear_rank3", lambda: haiku_etp.Linear(6), (2, 5, 4), 2),
      (
          "conv_channels_last",
          lambda: haiku_etp.Conv2D(4, 3, stride=2),
          (2, 5, 5, 2),
          4,
      ),
      (
          "conv_channels_first",
          lambda: haiku_etp.ConvND(
              2, 6, 2, data_format="channels_first", with_bias=False
          ),
          (2, 2, 4, 4),
          3,
      ),
  )
  def test_split_has_one_relation_per_part(self, make_layer, shape, num):
    compiled = _compile(_leaky_split(make_layer, num), shape)
    self.assertTrue(compiled.drtrl_exact, msg=compiled.report())
    self.assertLen(compiled.relations, num)
    self.assertLen(compiled.groups, num)
    # Each part feeds its own integrator, and all parts share one parameter.
    groups = [r.groups for r in compiled.relations]
    self.assertCountEqual(groups, [(g,) for g in range(num)])
    paths = {r.weights["weight"] for r in compiled.relations}
    self.assertLen(paths, 1)
    self.assertLen(
        {r.key for r in compiled.relations}, num, msg="keys are unique"
    )


# name -> (make layer, input shape (B, ...), leak).
_EXACT = {
    "linear_rank3": (
        lambda: haiku_etp.Linear(3, b_init=hk.initializers.RandomNormal(0.5)),
        (2, 3, 4),
        0.8,
    ),
    "conv2d_channels_first": (
        lambda: haiku_etp.Conv2D(
            3,
            3,
            stride=1,
            data_format="channels_first",
            b_init=hk.initializers.RandomNormal(0.5),
        ),
        (2, 2, 4, 4),
        0.7,
    ),
    "conv1d_causal_rate2": (
        lambda: haiku_etp.Conv1D(
            3,
            3,
            rate=2,
            padding=hk.pad.causal,
            b_init=hk.initializers.RandomNormal(0.5),
        ),
        (2, 6, 2),
        0.7,
    ),
}

# Window 1 is the trace contraction alone; 3 adds the in-window VJP over
# several steps (and a shorter last window, T = 5).
_WINDOWS = (1, 3)


class ExactnessTest(parameterized.TestCase):
  """D-RTRL equals BPTT in float64 on leaky integrators over the layers."""

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))

  @parameterized.named_parameters((name, name) for name in sorted(_EXACT))
  def test_d_rtrl_equals_bptt(self, name):
    make_layer, shape, leak = _EXACT[name]
    model = _leaky(make_layer, leak)
    rs = np.random.RandomState(len(name))
    xs = jnp.asarray(rs.normal(size=(_STEPS,) + shape))
    self.assertEqual(xs.dtype, jnp.float64)
    params, state = jax.eval_shape(model.init, jax.random.PRNGKey(1), xs[0])
    params = test_util.random_params(params, seed=len(name))
    state = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), state)
    out = jax.eval_shape(model.apply, params, state, None, xs[0])[0]
    ys = jnp.asarray(rs.normal(size=(_STEPS,) + out.shape))
    learner = haiku_etp.d_rtrl(model)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      learner_state = learner.init_state(params, state, None, xs[0])
    self.assertEmpty(
        [w for w in caught if w.category is haiku_etp.ApproximationWarning]
    )
    compiled = learner.compile(params, learner_state, None, xs[0])
    self.assertTrue(compiled.drtrl_exact, msg=compiled.report())

    def run(params, xs, ys):
      reference = testing.bptt_grads(
          model, test_util.mse, params, state, None, xs, ys
      )
      results = {
          window: learner.sequence_grad(test_util.mse, window=window)(
              params, learner_state, None, xs, ys
          )
          for window in _WINDOWS
      }
      return reference, results

    (grads_ref, losses_ref), results = test_util.fast_jit(run)(params, xs, ys)
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads_ref):
      self.assertEqual(leaf.dtype, jnp.float64)
      self.assertTrue(
          np.any(np.asarray(leaf) != 0),
          msg=f"reference gradient {jax.tree_util.keystr(path)} is all zero",
      )
    for window, result in results.items():
      with self.subTest(window=window):
        chex.assert_trees_all_equal_structs(result.grads, grads_ref)
        err = testing.relative_error(result.grads, grads_ref)
        self.assertLessEqual(
            err, test_util.EXACT_RTOL, msg=f"{name}, window {window}"
        )
        np.testing.assert_allclose(
            result.losses, losses_ref, rtol=1e-12, atol=1e-14
        )


class ErrorTest(parameterized.TestCase):
  """Clear ``ValueError``s for bad arguments and inputs."""

  def assert_init_raises(self, fn, shape, regex):
    model = hk.transform(fn)
    with self.assertRaisesRegex(ValueError, regex):
      model.init(jax.random.PRNGKey(0), jnp.ones(shape))

  def test_linear_scalar_input(self):
    self.assert_init_raises(
        lambda x: haiku_etp.Linear(3)(x),
        (),
        r"Input to Linear must have rank >= 1, got shape \(\)",
    )

  @parameterized.named_parameters(
      ("too_low", (4, 4), r"rank 3 \(unbatched\) or 4, got shape \(4, 4\)"),
      (
          "too_high",
          (1, 2, 4, 4, 4),
          r"rank 3 \(unbatched\) or 4, got shape \(1, 2, 4, 4, 4\)",
      ),
  )
  def test_conv_rank(self, shape, regex):
    self.assert_init_raises(
        lambda x: haiku_etp.Conv2D(3, 2)(x),
        shape,
        r"Input to Conv2D .*" + regex,
    )

  def test_conv_nd_rank(self):
    self.assert_init_raises(
        lambda x: haiku_etp.ConvND(1, 3, 2)(x),
        (1, 2, 4, 4),
        r"Input to ConvND must have rank 2 .* 3, got shape \(1, 2, 4, 4\)",
    )

  @parameterized.named_parameters(
      ("channels_last", "NHWC", (1, 4, 4, 3)),
      ("channels_first", "NCHW", (1, 3, 4, 4)),
  )
  def test_channels_not_multiple_of_groups(self, data_format, shape):
    self.assert_init_raises(
        lambda x: haiku_etp.Conv2D(
            4, 2, feature_group_count=2, data_format=data_format
        )(x),
        shape,
        r"3 channels, not a multiple of feature_group_count 2; input shape "
        + rf"\({', '.join(map(str, shape))}\)",
    )

  def test_output_channels_not_multiple_of_groups(self):
    self.assert_init_raises(
        lambda x: haiku_etp.Conv2D(3, 2, feature_group_count=2)(x),
        (1, 4, 4, 4),
        r"output_channels 3 must be a multiple of feature_group_count 2",
    )

  @parameterized.named_parameters(
      ("linear", lambda: haiku_etp.Linear(3), (2, 4), (2, 5), r"linear/w"),
      (
          "conv",
          lambda: haiku_etp.Conv2D(3, 2),
          (1, 4, 4, 4),
          (1, 4, 4, 5),
          r"conv2_d/w",
      ),
      (
          "conv_nchw",
          lambda: haiku_etp.Conv2D(3, 2, data_format="NCHW"),
          (1, 4, 4, 4),
          (1, 5, 4, 4),
          r"conv2_d/w",
      ),
  )
  def test_channel_mismatch_with_params(self, make, shape, other, name):
    # Parameters made for one channel count, applied to another: Haiku's
    # get_parameter reports the shape mismatch.
    model = hk.transform(lambda x: make()(x))
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones(shape))
    with self.assertRaisesRegex(ValueError, name + r".*shape"):
      jax.eval_shape(model.apply, params, None, jnp.ones(other))

  @parameterized.named_parameters(
      ("nhcw", lambda: haiku_etp.Conv2D(3, 2, data_format="NHCW"), "'NHCW'"),
      (
          "channels_middle",
          lambda: haiku_etp.ConvND(2, 3, 2, data_format="channels_middle"),
          "'channels_middle'",
      ),
      (
          "wrong_length",
          lambda: haiku_etp.Conv1D(3, 2, data_format="NHWC"),
          r"'NHWC' for a 1-D convolution",
      ),
      (
          "no_batch_axis",
          lambda: haiku_etp.Conv2D(3, 2, data_format="HWCN"),
          "'HWCN'",
      ),
      (
          "repeated_axis",
          lambda: haiku_etp.Conv2D(3, 2, data_format="NHHC"),
          "'NHHC'",
      ),
  )
  def test_unknown_data_format(self, make, shown):
    self.assert_init_raises(
        lambda x: make()(x), (1, 4, 4, 3), rf"Unknown data_format {shown}"
    )

  @parameterized.named_parameters(
      ("output_channels", dict(output_channels=0), r"output_channels .* 0"),
      (
          "output_channels_neg",
          dict(output_channels=-3),
          r"output_channels .*-3",
      ),
      ("kernel_shape", dict(kernel_shape=0), r"kernel_shape .*\(0, 0\)"),
      ("kernel_entry", dict(kernel_shape=(2, -1)), r"kernel_shape .*\(2, -1\)"),
      ("stride", dict(stride=(1, 0)), r"stride .*\(1, 0\)"),
      ("rate", dict(rate=-1), r"rate .*\(-1, -1\)"),
      (
          "feature_group_count",
          dict(feature_group_count=0),
          r"feature_group_count must be a positive int, got 0",
      ),
      (
          "kernel_length",
          dict(kernel_shape=(2, 2, 2)),
          r"kernel_shape .*sequence of 2 positive ints, got \(2, 2, 2\)",
      ),
      (
          "stride_length",
          dict(stride=(1,)),
          r"stride .*sequence of 2 positive ints, got \(1,\)",
      ),
      (
          "mask_shape",
          dict(mask=jnp.ones((2, 2, 3, 3))),
          r"mask of Conv2D must have the kernel's shape \(2, 2, 4, 3\), got "
          r"\(2, 2, 3, 3\)",
      ),
      (
          "padding_string",
          dict(padding="FOO"),
          r"padding must be one of .*'SAME'.*got 'FOO'",
      ),
      (
          "padding_pairs",
          dict(padding=((1, 1),)),
          r"padding must have 2 \(low, high\) pairs .*2-D conv",
      ),
      (
          "padding_fns",
          dict(padding=(hk.pad.causal,) * 3),
          r"padding needs 2 pad functions, got 3",
      ),
      (
          "num_spatial_dims",
          dict(num_spatial_dims=0),
          r"num_spatial_dims must be a positive int, got 0",
      ),
      # Fractional sizes must not be truncated silently (Haiku raises too).
      (
          "fractional_kernel_entry",
          dict(kernel_shape=(2.5, 2)),
          r"kernel_shape .*2\.5",
      ),
      ("fractional_stride_entry", dict(stride=(1.5, 1)), r"stride .*1\.5"),
      ("fractional_stride", dict(stride=1.5), r"stride .*1\.5"),
  )
  def test_bad_conv_argument(self, kwargs, regex):
    kwargs = dict(
        dict(num_spatial_dims=2, output_channels=3, kernel_shape=2), **kwargs
    )
    self.assert_init_raises(
        lambda x: haiku_etp.ConvND(**kwargs, name="conv2_d")(x),
        (1, 4, 4, 4),
        regex.replace("Conv2D", "ConvND"),
    )

  @parameterized.named_parameters(
      ("zero", 0, r"output_size must be a positive int, got 0"),
      ("negative", -2, r"output_size must be a positive int, got -2"),
      ("float", 2.0, r"output_size must be a positive int, got 2\.0"),
  )
  def test_bad_linear_size(self, size, regex):
    self.assert_init_raises(lambda x: haiku_etp.Linear(size)(x), (2, 3), regex)


if __name__ == "__main__":
  absltest.main()
