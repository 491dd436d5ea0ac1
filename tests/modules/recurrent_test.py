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
"""Tests of the rate-based recurrent cells.

* Parity with Haiku: ``VanillaRNN``, ``GRU``, ``LSTM`` and the convolutional
  LSTMs create the parameters of their Haiku namesakes (module names,
  shapes, initialisers and creation order, hence the same values from the
  same rng, which a sample of cases draws and compares) and, unrolled with
  ``learner.unroll`` from the state the learner initialised, give the
  outputs of ``hk.dynamic_unroll`` on the Haiku core (batched and
  unbatched).
* The convolutional GRUs follow ``hk.GRU``'s equations with ``SAME``
  channels-last convolutions: checked against a plain-JAX reference.
* The conv cells' ``learner.unroll`` examples run and give the output
  shapes they state.
* State layout and compiler view: hidden state names, shapes and zero init;
  LSTM cells form one group of two states; the GRU reset-gate relations reach
  no group and are reported; every cell cuts a memory path, and a D-RTRL
  learner says so with an ``ApproximationWarning``.
* Every learner on every cell against the BPTT oracle is in
  ``modules_test`` (each cell is a registered module example).
* Bad arguments and inputs raise ``ValueError`` with a useful message.
"""

import functools
from typing import Callable, NamedTuple

from absl.testing import absltest
from absl.testing import parameterized
import chex
import haiku as hk
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

import haiku_etp
from haiku_etp import testing
from tests import test_util

_RTOL = 1e-5
_ATOL = 1e-6
_BATCH = 2
_STEPS = 5


def _inputs(shape, seed=0):
  return jnp.asarray(
      np.random.RandomState(seed).normal(size=shape), jnp.float32
  )


def _normal(stddev=0.5):
  return hk.initializers.RandomNormal(stddev)


def _parity_case(name, hk_core, ours, x_shape, unbatched=False, sample=False):
  """A parity case; ``sample`` draws Haiku's values from the rng."""
  return dict(
      testcase_name=name,
      hk_core=hk_core,
      ours=ours,
      x_shape=x_shape,
      unbatched=unbatched,
      sample=sample,
  )


_PARITY_CASES = (
    _parity_case(
        "vanilla_rnn",
        lambda: hk.VanillaRNN(4),
        lambda: haiku_etp.VanillaRNN(4),
        (3,),
        sample=True,
    ),
    _parity_case(
        "vanilla_rnn_unbatched",
        lambda: hk.VanillaRNN(4),
        lambda: haiku_etp.VanillaRNN(4),
        (3,),
        unbatched=True,
    ),
    _parity_case(
        "vanilla_rnn_single_bias",
        lambda: hk.VanillaRNN(4, double_bias=False),
        lambda: haiku_etp.VanillaRNN(4, double_bias=False),
        (3,),
    ),
    _parity_case("gru", lambda: hk.GRU(4), lambda: haiku_etp.GRU(4), (3,)),
    _parity_case(
        "gru_unbatched",
        lambda: hk.GRU(4),
        lambda: haiku_etp.GRU(4),
        (3,),
        unbatched=True,
    ),
    _parity_case(
        "gru_custom_init",
        lambda: hk.GRU(
            4, w_i_init=_normal(), w_h_init=_normal(), b_init=_normal()
        ),
        lambda: haiku_etp.GRU(
            4, w_i_init=_normal(), w_h_init=_normal(), b_init=_normal()
        ),
        (3,),
        sample=True,
    ),
    _parity_case(
        "lstm", lambda: hk.LSTM(4), lambda: haiku_etp.LSTM(4), (3,), sample=True
    ),
    _parity_case(
        "lstm_unbatched",
        lambda: hk.LSTM(4),
        lambda: haiku_etp.LSTM(4),
        (3,),
        unbatched=True,
    ),
    _parity_case(
        "conv1d_lstm",
        lambda: hk.Conv1DLSTM((3,), 2, 2),
        lambda: haiku_etp.Conv1DLSTM((3,), 2, 2),
        (3, 2),
    ),
    _parity_case(
        "conv2d_lstm",
        lambda: hk.Conv2DLSTM((3, 3), 2, 2),
        lambda: haiku_etp.Conv2DLSTM((3, 3), 2, 2),
        (3, 3, 2),
        sample=True,
    ),
    _parity_case(
        "conv3d_lstm",
        lambda: hk.Conv3DLSTM((3, 3, 3), 2, 2),
        lambda: haiku_etp.Conv3DLSTM((3, 3, 3), 2, 2),
        (3, 3, 3, 2),
    ),
    _parity_case(
        "conv_nd_lstm",
        # Haiku does not export ConvNDLSTM; its Conv2DLSTM is one.
        lambda: hk.Conv2DLSTM((3, 3), 2, (2, 3), name="cell"),
        lambda: haiku_etp.ConvNDLSTM(2, (3, 3), 2, (2, 3), name="cell"),
        (3, 3, 1),
    ),
)


def _step_model(make_cell):
  return hk.transform_with_state(lambda x: make_cell()(x))


def _hk_unroll(make_core, unbatched):
  def fn(xs):
    core = make_core()
    batch = None if unbatched else xs.shape[1]
    outs, _ = hk.dynamic_unroll(core, xs, core.initial_state(batch))
    return outs

  return fn


def _initial_state(make_cell, x):
  """The model state the cell's init builds; parameters are not drawn."""

  def zero_params(next_creator, shape, dtype, init, context):
    del init, context
    return next_creator(shape, dtype, jnp.zeros)

  def step(x):
    with hk.custom_creator(zero_params):
      return make_cell()(x)

  return hk.transform_with_state(step).init(None, x)[1]


class _CellTestCase(chex.TestCase):

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

  def assert_zero_hidden_state(self, state, module, names, shape):
    self.assertEqual(list(state), [module])
    self.assertEqual(sorted(state[module]), [f"{n}:hidden" for n in names])
    for value in state[module].values():
      self.assertEqual(value.shape, shape)
      np.testing.assert_array_equal(value, np.zeros(shape))


class ParityTest(_CellTestCase):
  """Same parameters as the Haiku cores; ``unroll`` is ``dynamic_unroll``."""

  @parameterized.named_parameters(*_PARITY_CASES)
  def test_matches_dynamic_unroll(
      self, hk_core, ours, x_shape, unbatched, sample
  ):
    batch = () if unbatched else (_BATCH,)
    xs = _inputs((_STEPS,) + batch + x_shape)
    theirs_fn = _hk_unroll(hk_core, unbatched)
    theirs = hk.transform(theirs_fn)
    model = _step_model(ours)
    # Same parameters, initialisers and creation order as Haiku.
    self.assertEqual(
        test_util.param_creations(lambda x: ours()(x), xs[0]),
        test_util.param_creations(theirs_fn, xs),
    )
    state = _initial_state(ours, xs[0])
    learner = haiku_etp.bptt(model)

    def run(params, xs):
      learner_state = learner.init_state(params, state, None, xs[0])
      return (
          theirs.apply(params, None, xs),
          learner.unroll(params, learner_state, None, xs)[0],
      )

    if sample:
      # Hence the same values from the same rng.
      rng = jax.random.PRNGKey(11)
      params, our_params = test_util.fast_jit(
          lambda: (theirs.init(rng, xs), model.init(rng, xs[0])[0])
      )()
      self.assert_same_params(our_params, params)
    else:
      params = test_util.random_params(
          jax.eval_shape(theirs.init, jax.random.PRNGKey(0), xs), seed=0
      )

    # Zero hidden state of the output's shape, in the module's namespace.
    module = sorted(state)[0]
    self.assertTrue(params and all(m.startswith(module) for m in params))
    names = [n.split(":")[0] for n in sorted(state[module])]
    self.assertIn(names, (["h"], ["c", "h"]))

    want, got = test_util.fast_jit(run)(params, xs)
    self.assert_zero_hidden_state(state, module, names, want.shape[1:])
    self.assertEqual(got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=_RTOL, atol=_ATOL)


class DocExampleTest(parameterized.TestCase):
  """The conv cells' literal ``learner.unroll`` examples, run on shapes.

  They are literal blocks, not doctests (drawing their parameters eagerly
  takes seconds): each runs under ``jax.eval_shape`` and must give the
  output shape its last comment states.
  """

  @parameterized.parameters(
      "ConvNDLSTM",
      "ConvNDGRU",
      "Conv1DLSTM",
      "Conv2DLSTM",
      "Conv3DLSTM",
      "Conv1DGRU",
      "Conv2DGRU",
      "Conv3DGRU",
  )
  def test_unroll_example(self, name):
    cls = getattr(haiku_etp, name)
    self.assertIn("not an ``hk.RNNCore``", " ".join(cls.__doc__.split()))
    block = cls.__doc__.split("``hk.dynamic_unroll``::\n\n", 1)[1]
    lines = [l[4:] for l in block.splitlines() if l.startswith("    ")]
    self.assertIn("learner.unroll(params, state, None, xs)", lines[-1])
    code = "\n".join(lines)
    for call in ("learner.init(", "learner.unroll("):
      # learner.init(...) -> jax.eval_shape(learner.init, ...).
      code = code.replace(call, f"jax.eval_shape({call[:-1]}, ")
    scope = dict(hk=hk, jax=jax, jnp=jnp, haiku_etp=haiku_etp)
    scope[name] = cls
    exec(code, scope)  # pylint: disable=exec-used
    self.assertEqual(str(scope["outs"].shape), lines[-1].split("# ")[-1])


class IntegerArgumentTest(_CellTestCase):
  """NumPy integer sizes are accepted, as Haiku's cores accept them."""

  @parameterized.named_parameters(
      (
          "vanilla_rnn",
          lambda: hk.VanillaRNN(np.int64(4)),
          lambda: haiku_etp.VanillaRNN(np.int64(4)),
          (3,),
      ),
      (
          "gru",
          lambda: hk.GRU(np.int64(4)),
          lambda: haiku_etp.GRU(np.int64(4)),
          (3,),
      ),
      (
          "lstm",
          lambda: hk.LSTM(np.int64(4)),
          lambda: haiku_etp.LSTM(np.int64(4)),
          (3,),
      ),
      (
          "conv2d_lstm",
          lambda: hk.Conv2DLSTM(np.array([3, 3]), np.int64(2), np.int64(2)),
          lambda: haiku_etp.Conv2DLSTM(
              np.array([3, 3]), np.int64(2), np.int64(2)
          ),
          (3, 3, 2),
      ),
  )
  def test_numpy_integer_sizes(self, hk_core, ours, x_shape):
    x = jnp.ones((_BATCH,) + x_shape)

    def hk_step(x):
      core = hk_core()
      return core(x, core.initial_state(x.shape[0]))[0]

    theirs = hk.transform(hk_step)
    rng = jax.random.PRNGKey(0)
    want = jax.eval_shape(theirs.init, rng, x)
    model = _step_model(ours)
    got, state = jax.eval_shape(model.init, rng, x)  # raises ValueError today
    chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
    out = jax.eval_shape(model.apply, got, state, None, x)[0]
    self.assertEqual(
        out.shape, jax.eval_shape(theirs.apply, want, None, x).shape
    )


@functools.partial(jax.jit, static_argnums=2)
def _conv_gru_reference(params, xs, num_spatial_dims):
  """``hk.GRU``'s equations with channels-last ``SAME`` convolutions."""
  n = num_spatial_dims
  spatial = "DHW"[3 - n :]
  dn = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
  w_i, w_h, b = params["w_i"], params["w_h"], params["b"]
  c = w_h.shape[-2]

  def conv(inputs, kernel):
    return lax.conv_general_dilated(
        inputs,
        kernel,
        window_strides=(1,) * n,
        padding="SAME",
        dimension_numbers=dn,
        precision=lax.Precision.HIGHEST,
    )

  h = jnp.zeros(xs.shape[1:-1] + (c,), xs.dtype)
  outs = []
  for x in xs:
    z = jax.nn.sigmoid(conv(x, w_i[..., :c]) + b[:c] + conv(h, w_h[..., :c]))
    r = jax.nn.sigmoid(
        conv(x, w_i[..., c : 2 * c])
        + b[c : 2 * c]
        + conv(h, w_h[..., c : 2 * c])
    )
    a = jnp.tanh(
        conv(x, w_i[..., 2 * c :]) + b[2 * c :] + conv(r * h, w_h[..., 2 * c :])
    )
    h = (1.0 - z) * h + z * a
    outs.append(h)
  return jnp.stack(outs)


class ConvGRUTest(_CellTestCase):
  """The convolutional GRUs against a plain-JAX reference."""

  @parameterized.named_parameters(
      ("conv1d", haiku_etp.Conv1DGRU, (5,), (3,), 3, "conv1_dgru"),
      ("conv2d", haiku_etp.Conv2DGRU, (3, 4), (2, 3), 3, "conv2_dgru"),
      (
          "conv_nd_2d",
          functools.partial(haiku_etp.ConvNDGRU, 2),
          (3, 3),
          (2, 2),
          2,
          "conv_ndgru",
      ),
  )
  def test_matches_reference(
      self, cls, spatial, kernel_shape, channels, module
  ):
    in_channels = 2
    make = lambda: cls(
        spatial,
        channels,
        kernel_shape,
        w_i_init=_normal(),
        w_h_init=_normal(),
        b_init=_normal(),
    )
    model = _step_model(make)
    xs = _inputs((_STEPS, _BATCH) + spatial + (in_channels,))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(5), xs[0])[0]
    self.assertEqual(list(shapes), [module])
    self.assertEqual(
        {name: v.shape for name, v in shapes[module].items()},
        {
            "w_i": kernel_shape + (in_channels, 3 * channels),
            "w_h": kernel_shape + (channels, 3 * channels),
            "b": (3 * channels,),
        },
    )
    # The constructor's initialisers are used.
    creations = test_util.param_creations(lambda x: make()(x), xs[0])
    normal = (hk.initializers.RandomNormal, {"stddev": 0.5, "mean": 0.0})
    self.assertEqual([init for *_, init in creations], [normal] * 3)
    state = _initial_state(make, xs[0])
    hidden_shape = (_BATCH,) + spatial + (channels,)
    self.assert_zero_hidden_state(state, module, ["h"], hidden_shape)

    params = test_util.random_params(shapes, seed=5)
    learner = haiku_etp.bptt(model)

    def run(params, xs):
      learner_state = learner.init_state(params, state, None, xs[0])
      got = learner.unroll(params, learner_state, None, xs)[0]
      return got, _conv_gru_reference(params[module], xs, len(spatial))

    got, want = test_util.fast_jit(run)(params, xs)
    self.assertEqual(got.shape, (_STEPS,) + hidden_shape)
    np.testing.assert_allclose(got, want, rtol=_RTOL, atol=_ATOL)

  def test_unbatched_matches_batch_of_one(self):
    make = lambda: haiku_etp.Conv2DGRU((3, 3), 2, 2)
    model = _step_model(make)
    xs = _inputs((_STEPS, 3, 3, 2))
    state = _initial_state(make, xs[0])
    self.assertEqual(state["conv2_dgru"]["h:hidden"].shape, (3, 3, 2))
    params = test_util.random_params(
        jax.eval_shape(model.init, jax.random.PRNGKey(2), xs[0])[0], seed=2
    )
    learner = haiku_etp.bptt(model)

    def run(params, xs):
      learner_state = learner.init_state(params, state, None, xs[0])
      got = learner.unroll(params, learner_state, None, xs)[0]
      return got, _conv_gru_reference(params["conv2_dgru"], xs[:, None], 2)

    got, want = test_util.fast_jit(run)(params, xs)
    np.testing.assert_allclose(got, want[:, 0], rtol=_RTOL, atol=_ATOL)


class _Cell(NamedTuple):
  make: Callable[[], hk.Module]
  x_shape: tuple[int, ...]  # one step, without the batch axis
  module: str
  states: tuple[str, ...]
  hidden_shape: tuple[int, ...]  # without the batch axis
  num_relations: int
  gru: bool


_CELLS = {
    "vanilla_rnn": _Cell(
        lambda: haiku_etp.VanillaRNN(3),
        (2,),
        "vanilla_rnn",
        ("h",),
        (3,),
        2,
        False,
    ),
    "gru": _Cell(lambda: haiku_etp.GRU(3), (2,), "gru", ("h",), (3,), 6, True),
    "lstm": _Cell(
        lambda: haiku_etp.LSTM(3), (2,), "lstm", ("c", "h"), (3,), 4, False
    ),
    "conv1d_lstm": _Cell(
        lambda: haiku_etp.Conv1DLSTM((3,), 2, 2),
        (3, 2),
        "conv1_dlstm",
        ("c", "h"),
        (3, 2),
        8,
        False,
    ),
    "conv2d_lstm": _Cell(
        lambda: haiku_etp.Conv2DLSTM((3, 3), 2, 2),
        (3, 3, 1),
        "conv2_dlstm",
        ("c", "h"),
        (3, 3, 2),
        8,
        False,
    ),
    "conv3d_lstm": _Cell(
        lambda: haiku_etp.Conv3DLSTM((2, 2, 2), 2, 2),
        (2, 2, 2, 2),
        "conv3_dlstm",
        ("c", "h"),
        (2, 2, 2, 2),
        8,
        False,
    ),
    "conv1d_gru": _Cell(
        lambda: haiku_etp.Conv1DGRU((3,), 3, 2),
        (3, 2),
        "conv1_dgru",
        ("h",),
        (3, 3),
        6,
        True,
    ),
    "conv2d_gru": _Cell(
        lambda: haiku_etp.Conv2DGRU((3, 3), 2, 2),
        (3, 3, 1),
        "conv2_dgru",
        ("h",),
        (3, 3, 2),
        6,
        True,
    ),
    "conv3d_gru": _Cell(
        lambda: haiku_etp.Conv3DGRU((2, 2, 2), 2, 2),
        (2, 2, 2, 1),
        "conv3_dgru",
        ("h",),
        (2, 2, 2, 2),
        6,
        True,
    ),
}

# Compiler-only cases (cheap: no parameter is drawn).
_COMPILE_CELLS = dict(
    _CELLS,
    conv_nd_lstm=_Cell(
        lambda: haiku_etp.ConvNDLSTM(1, (4,), 2, 3),
        (4, 2),
        "conv_ndlstm",
        ("c", "h"),
        (4, 2),
        8,
        False,
    ),
    conv_nd_gru=_Cell(
        lambda: haiku_etp.ConvNDGRU(2, (3, 3), 2, (2, 3)),
        (3, 3, 2),
        "conv_ndgru",
        ("h",),
        (3, 3, 2),
        6,
        True,
    ),
)


def _shapes(cell, batch=_BATCH):
  """``(model, x, params, state)`` with shapes only: nothing is drawn."""
  model = _step_model(cell.make)
  x = jnp.ones((batch,) + cell.x_shape)
  params, state = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return model, x, params, state


def _compile(cell):
  """The D-RTRL view of the cell, which it announces as approximate."""
  model, x, params, state = _shapes(cell)
  with testing.expect_warning(haiku_etp.ApproximationWarning, cell.module):
    return haiku_etp.d_rtrl(model).compile(params, state, None, x)


class StateLayoutTest(_CellTestCase):
  """Hidden state names and shapes, and the hidden groups.

  Zero initial values are checked where the cells are really initialised
  (the parity and conv GRU tests).
  """

  @parameterized.named_parameters(*sorted(_COMPILE_CELLS.items()))
  def test_hidden_state(self, cell):
    model, x, params, state = _shapes(cell)
    shape = (_BATCH,) + cell.hidden_shape
    self.assertEqual(list(state), [cell.module])
    self.assertEqual(
        sorted(state[cell.module]), [f"{n}:hidden" for n in cell.states]
    )
    for value in state[cell.module].values():
      self.assertEqual(value.shape, shape)
      self.assertEqual(value.dtype, jnp.float32)
    compiled = _compile(cell)
    self.assertLen(compiled.groups, 1)
    (group,) = compiled.groups
    self.assertEqual(group.name, cell.module)
    self.assertEqual(group.num_states, len(cell.states))
    self.assertEqual(
        group.states, tuple(f"{cell.module}/{n}" for n in cell.states)
    )
    self.assertEqual(group.shape, shape)
    self.assertEqual(group.dtype, jnp.float32)


class DiagnosticsTest(parameterized.TestCase):
  """What the module docstrings promise about the compiler's view."""

  @parameterized.named_parameters(*sorted(_COMPILE_CELLS.items()))
  def test_relations_and_diagnostics(self, cell):
    compiled = _compile(cell)
    report = compiled.report()
    codes = [d.code for d in compiled.diagnostics]
    self.assertFalse(compiled.drtrl_exact, msg=report)
    self.assertIn("cut_memory_path", codes, msg=report)
    self.assertNotIn("untraced_parameter", codes, msg=report)
    self.assertLen(compiled.relations, cell.num_relations, msg=report)
    # Every relation's weights are parameters of this cell.
    for relation in compiled.relations:
      for paths in relation.weights.values():
        for path in paths:
          self.assertTrue(path.startswith(cell.module + "/"), msg=path)

    stranded = [r for r in compiled.relations if not r.groups]
    through_cut = [
        d for d in compiled.diagnostics if d.code == "relation_through_cut"
    ]
    if not cell.gru:
      self.assertEmpty(stranded, msg=report)
      self.assertEmpty(through_cut, msg=report)
      return
    # The reset-gate slices of w_i (with b) and of w_h reach no group.
    self.assertLen(stranded, 2, msg=report)
    self.assertEqual(
        sorted(tuple(sorted(r.weights.items())) for r in stranded),
        sorted(
            [
                (
                    ("bias", (f"{cell.module}/b",)),
                    ("weight", (f"{cell.module}/w_i",)),
                ),
                (("weight", (f"{cell.module}/w_h",)),),
            ]
        ),
    )
    self.assertLen(through_cut, 2, msg=report)
    for d in through_cut:
      self.assertEqual(d.level, "warning")
    self.assertCountEqual(
        [d.message.split(" ")[0] for d in through_cut],
        [r.key for r in stranded],
    )
    # The other four gate relations (z and a, both sides) feed the group.
    for relation in compiled.relations:
      if relation not in stranded:
        self.assertEqual(relation.groups, (0,))


def _initialised(make, shape):
  """``(model, params, state)`` for inputs of ``shape``, zero hidden state."""
  model = _step_model(make)
  params, state = jax.eval_shape(
      model.init, jax.random.PRNGKey(0), jnp.ones(shape)
  )
  zeros = lambda s: jnp.zeros(s.shape, s.dtype)
  return (
      model,
      test_util.random_params(params, 0),
      jax.tree_util.tree_map(zeros, state),
  )


class ErrorTest(parameterized.TestCase):
  """Clear ``ValueError``s for bad arguments and inputs."""

  def assert_init_raises(self, make, shape, regex):
    model = _step_model(make)
    with self.assertRaisesRegex(ValueError, regex):
      model.init(jax.random.PRNGKey(0), jnp.ones(shape))

  @parameterized.named_parameters(
      (
          "gru_rank3",
          lambda: haiku_etp.GRU(3),
          (1, 2, 4),
          r"Input to GRU must have rank 1 or 2, got shape \(1, 2, 4\)",
      ),
      (
          "lstm_rank0",
          lambda: haiku_etp.LSTM(3),
          (),
          r"Input to LSTM must have rank 1 or 2, got shape \(\)",
      ),
      (
          "vanilla_rnn_rank3",
          lambda: haiku_etp.VanillaRNN(3),
          (2, 2, 4),
          r"Input to VanillaRNN must have rank 1 or 2, got shape \(2, 2, 4\)",
      ),
      (
          "conv2d_lstm_rank2",
          lambda: haiku_etp.Conv2DLSTM((4, 4), 2, 2),
          (4, 4),
          r"Input to Conv2DLSTM must have rank 3 or 4, got shape \(4, 4\)",
      ),
      (
          "conv1d_gru_rank4",
          lambda: haiku_etp.Conv1DGRU((4,), 2, 2),
          (1, 1, 4, 2),
          r"Input to Conv1DGRU must have rank 2 or 3, got shape \(1, 1, 4, 2\)",
      ),
  )
  def test_wrong_rank(self, make, shape, regex):
    self.assert_init_raises(make, shape, regex)

  @parameterized.named_parameters(
      ("conv2d_lstm", lambda: haiku_etp.Conv2DLSTM, "Conv2DLSTM"),
      ("conv2d_gru", lambda: haiku_etp.Conv2DGRU, "Conv2DGRU"),
  )
  def test_spatial_shape_mismatch(self, get_cls, name):
    self.assert_init_raises(
        lambda: get_cls()((4, 4), 2, 2),
        (1, 4, 5, 2),
        rf"Input to {name} has spatial shape \(4, 5\), but the cell was built"
        r" for input_shape \(4, 4\); input shape \(1, 4, 5, 2\)",
    )

  def test_spatial_shape_mismatch_unbatched(self):
    self.assert_init_raises(
        lambda: haiku_etp.Conv1DLSTM((4,), 2, 2),
        (5, 2),
        r"spatial shape \(5,\), but the cell was built for input_shape \(4,\)",
    )

  @parameterized.named_parameters(
      ("lstm_too_short", lambda: haiku_etp.Conv2DLSTM((4,), 2, 2), r"\(4,\)"),
      (
          "gru_too_long",
          lambda: haiku_etp.Conv1DGRU((4, 4), 2, 2),
          r"\(4, 4\)",
      ),
      (
          "nd_gru_length",
          lambda: haiku_etp.ConvNDGRU(3, (4, 4), 2, 2),
          r"\(4, 4\)",
      ),
      ("zero", lambda: haiku_etp.Conv2DLSTM((4, 0), 2, 2), r"\(4, 0\)"),
      ("negative", lambda: haiku_etp.Conv2DGRU((4, -1), 2, 2), r"\(4, -1\)"),
      ("float", lambda: haiku_etp.Conv1DLSTM((4.0,), 2, 2), r"\(4\.0,\)"),
  )
  def test_bad_input_shape(self, make, shown):
    self.assert_init_raises(
        make,
        (1, 4, 4, 2),
        r"input_shape must be \d positive spatial sizes \(no batch, no "
        r"channels\), got .*" + shown,
    )

  @parameterized.named_parameters(
      ("vanilla_rnn", lambda: haiku_etp.VanillaRNN(0), "hidden_size", "0"),
      ("gru", lambda: haiku_etp.GRU(0), "hidden_size", "0"),
      ("lstm", lambda: haiku_etp.LSTM(-2), "hidden_size", "-2"),
      ("lstm_float", lambda: haiku_etp.LSTM(3.0), "hidden_size", r"3\.0"),
      (
          "conv1d_lstm",
          lambda: haiku_etp.Conv1DLSTM((4,), 0, 2),
          "output_channels",
          "0",
      ),
      (
          "conv1d_gru",
          lambda: haiku_etp.Conv1DGRU((4,), -1, 2),
          "output_channels",
          "-1",
      ),
      (
          "conv2d_lstm_kernel",
          lambda: haiku_etp.Conv2DLSTM((4, 4), 2, (2, 2, 2)),
          "kernel_shape",
          r"\(2, 2, 2\)",
      ),
  )
  def test_bad_size(self, make, what, shown):
    self.assert_init_raises(
        make, (1, 4, 2), rf"{what} must be a positive int.*got {shown}"
    )

  @parameterized.named_parameters(
      ("vanilla_rnn", lambda: haiku_etp.VanillaRNN(3), (4,), "h", (3,)),
      ("gru", lambda: haiku_etp.GRU(3), (4,), "h", (3,)),
      ("lstm", lambda: haiku_etp.LSTM(3), (4,), "c", (3,)),
      (
          "conv1d_lstm",
          lambda: haiku_etp.Conv1DLSTM((4,), 2, 2),
          (4, 2),
          "c",
          (4, 2),
      ),
      (
          "conv2d_gru",
          lambda: haiku_etp.Conv2DGRU((3, 3), 2, 2),
          (3, 3, 1),
          "h",
          (3, 3, 2),
      ),
  )
  def test_batch_mismatch(self, make, x_shape, name, hidden_shape):
    model, params, state = _initialised(make, (2,) + x_shape)
    fmt = lambda s: r"\(" + ", ".join(map(str, s)) + r"\)"
    with self.assertRaisesRegex(
        ValueError,
        rf"hidden state '{name}' has shape {fmt((2,) + hidden_shape)} but "
        rf"this input needs {fmt((3,) + hidden_shape)}; was the state "
        r"initialised for another batch size",
    ):
      model.apply(params, state, None, jnp.ones((3,) + x_shape))

  def test_unbatched_state_with_batched_input(self):
    model, params, state = _initialised(lambda: haiku_etp.GRU(3), (4,))
    with self.assertRaisesRegex(
        ValueError, r"GRU hidden state 'h' has shape \(3,\) but .*\(2, 3\)"
    ):
      model.apply(params, state, None, jnp.ones((2, 4)))

  @parameterized.named_parameters(
      ("vanilla_rnn", lambda: haiku_etp.VanillaRNN(3), "VanillaRNN", "h"),
      ("lstm", lambda: haiku_etp.LSTM(3), "LSTM", "c"),
  )
  def test_integer_inputs_are_named_as_the_cause(self, make, cell, name):
    # Initialised with float inputs, applied to int32 ones: the state's
    # dtype comes from the inputs, which the message names with the remedy.
    model, params, state = _initialised(make, (2, 4))
    with self.assertRaisesRegex(
        ValueError,
        rf"{cell} got inputs of dtype int32, but its hidden state '{name}' "
        r"takes the inputs' dtype and must be floating; cast the inputs to a "
        r"float dtype.*x\.astype\(jnp\.float32\)",
    ):
      model.apply(params, state, None, jnp.ones((2, 4), jnp.int32))


if __name__ == "__main__":
  absltest.main()
