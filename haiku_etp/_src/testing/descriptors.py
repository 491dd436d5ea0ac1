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
"""One small example per public module, in the dm-haiku descriptors spirit.

:data:`MODULE_EXAMPLES` registers every public ``hk.Module`` of
``haiku_etp`` once, with a step that uses it the way a model would and the
learners that equal BPTT on that step (``docs/design.md``, "When each
learner equals BPTT"). The coverage test runs every entry through ``jit``,
each learner and a checkpoint round trip, and fails for a public module that
is not registered; the ``modules_report`` experiment prints the table of
errors and cosines.
"""

import math
from typing import Any, Callable, Mapping, NamedTuple, Optional, Union
import warnings
import zlib

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.modules import cores
from haiku_etp._src.modules import layers
from haiku_etp._src.learners import driver as driver_lib
from haiku_etp._src.modules import long_range
from haiku_etp._src.testing import oracles
from haiku_etp._src.modules import recurrent
from haiku_etp._src.learners import registry
from haiku_etp._src.ops import sparse as sparse_lib
from haiku_etp._src.modules import spiking
from haiku_etp._src.core import state as state_lib

Decay = Union[float, tuple[float, float]]


class ModuleExample(NamedTuple):
  """A registered module and a one-step model built around it.

  Attributes:
    name: the public class name, e.g. ``"Conv2D"``.
    step: ``step(x_t) -> out_t``, to be wrapped in
      ``hk.transform_with_state``; it keeps memory in hidden state.
    input_shape: shape of one sample of ``x_t`` (the batch is added).
    exact: learners equal to BPTT on this step, from ``("d_rtrl",
      "es_d_rtrl")``.
    es_decay: ES-D-RTRL's decay; for an exact ES entry, ``(lam, 0)`` on the
      step's uniform leak ``lam``.
    input_scale: inputs are standard normal times this (spiking examples use
      a scale at which neurons fire).
    module: the public class name where ``name`` labels one of several
      entries of one module (``"RNNCoreStep"`` for ``"RNNCoreStep_GRU"``);
      ``None``: ``name`` is it.
  """

  name: str
  step: Callable[[jax.Array], jax.Array]
  input_shape: tuple[int, ...]
  exact: tuple[str, ...] = ()
  es_decay: Decay = 0.9
  input_scale: float = 1.0
  module: Optional[str] = None

  @property
  def module_name(self) -> str:
    """The public class the entry registers."""
    return self.name if self.module is None else self.module


_LEAK = 0.8


def _integrate(y_t: jax.Array) -> jax.Array:
  """``v_t = 0.8 v_{t-1} + y_t``: gives a feed-forward layer a memory."""
  v_tm1 = state_lib.get_hidden_state("v", y_t.shape, y_t.dtype)
  v_t = _LEAK * v_tm1 + y_t
  state_lib.set_hidden_state("v", v_t)
  return v_t


def _token_ids(x: jax.Array) -> jax.Array:
  """Integer ids from a float input ``(B, L)``: position ``l`` looks up row
  ``l`` or ``l + 1`` (two rows over time, so two slots of a per-row trace
  suffice)."""
  return jnp.arange(x.shape[-1]) + (x > 0).astype(jnp.int32)


def _layer(
    name: str,
    make: Callable[[], Callable[[jax.Array], jax.Array]],
    input_shape: tuple[int, ...],
) -> ModuleExample:
  return ModuleExample(
      name=name,
      step=lambda x: _integrate(make()(x)),
      input_shape=input_shape,
      exact=("d_rtrl", "es_d_rtrl"),
      es_decay=(_LEAK, 0.0),
  )


def _cell(
    name: str,
    make: Callable[[], Callable[[jax.Array], jax.Array]],
    input_shape: tuple[int, ...],
) -> ModuleExample:
  return ModuleExample(
      name=name, step=lambda x: make()(x), input_shape=input_shape
  )


def _core(
    name: str, make: Callable[[], hk.RNNCore], input_shape: tuple[int, ...]
) -> ModuleExample:
  """Haiku's own core ``hk.<name>``, unmodified, as a step."""
  return ModuleExample(
      name=f"RNNCoreStep_{name}",
      step=lambda x: cores.RNNCoreStep(make())(x),
      input_shape=input_shape,
      module="RNNCoreStep",
  )


_SYNAPSE_TAU = 5.0


def _synapse(x: jax.Array) -> jax.Array:
  return spiking.ExponentialSynapse(tau=_SYNAPSE_TAU)(layers.Linear(4)(x))


def _conv_lif(x: jax.Array) -> jax.Array:
  i_t = spiking.ExponentialSynapse(tau=_SYNAPSE_TAU)(
      layers.Conv2D(3, 3, name="conv")(x)
  )
  return spiking.LIF(tau=10.0, refractory=1)(i_t)


def _alif(x: jax.Array) -> jax.Array:
  alif = spiking.ALIF(
      tau=10.0, tau_adapt=50.0, beta_adapt=0.2, reset="hard", train_tau=True
  )
  return alif(layers.Linear(4)(x))


_READOUT_TAU = 10.0


def _recurrent_lif(x: jax.Array) -> jax.Array:
  return spiking.RecurrentLIF(tau=5.0)(layers.Linear(4)(x))


def _eprop(x: jax.Array) -> jax.Array:
  """e-prop's network: Linear -> recurrent ALIF -> leaky readout."""
  alif = spiking.RecurrentALIF(tau=5.0, tau_adapt=20.0, beta_adapt=0.5)
  return spiking.LeakyReadout(2, tau=_READOUT_TAU)(alif(layers.Linear(4)(x)))


MODULE_EXAMPLES: tuple[ModuleExample, ...] = (
    _layer("Linear", lambda: layers.Linear(4), (3,)),
    _layer(
        "SparseLinear",
        lambda: layers.SparseLinear(
            sparse_lib.Connectivity.random((3, 4), 0.5, seed=0)
        ),
        (3,),
    ),
    ModuleExample(
        "Embed",
        lambda x: _integrate(layers.Embed(5, 3, max_rows=2)(_token_ids(x))),
        (2,),
        exact=("d_rtrl",),
        # Integer ids cannot be filtered: ES-D-RTRL keeps alpha_x = 0.
        es_decay=(0.0, _LEAK),
    ),
    _layer("ConvND", lambda: layers.ConvND(2, 3, 3), (5, 5, 2)),
    _layer(
        "Conv1D", lambda: layers.Conv1D(3, 3, rate=2, data_format="NCW"), (2, 6)
    ),
    _layer("Conv2D", lambda: layers.Conv2D(3, 3, stride=2), (5, 5, 2)),
    _layer("Conv3D", lambda: layers.Conv3D(2, 2), (3, 3, 3, 2)),
    _cell("VanillaRNN", lambda: recurrent.VanillaRNN(4), (3,)),
    _cell("LeakyRNN", lambda: recurrent.LeakyRNN(4, alpha=0.3), (3,)),
    _cell("GRU", lambda: recurrent.GRU(4), (3,)),
    _cell("LSTM", lambda: recurrent.LSTM(4), (3,)),
    # Haiku's own LSTM, unmodified: D-RTRL reads its matmul and gates as
    # the library's LSTM (tests/compiler/plain_layers_test.py).
    _cell("RNNCoreStep", lambda: cores.RNNCoreStep(hk.LSTM(4)), (3,)),
    # The other cores of Haiku's own that RNNCoreStep adapts.
    _core("VanillaRNN", lambda: hk.VanillaRNN(4), (3,)),
    _core("GRU", lambda: hk.GRU(4), (3,)),
    _core(
        "DeepRNN",
        lambda: hk.DeepRNN([hk.LSTM(3), jax.nn.relu, hk.LSTM(4)]),
        (3,),
    ),
    _core("Conv1DLSTM", lambda: hk.Conv1DLSTM((5,), 2, 3), (5, 2)),
    _cell(
        "ConvNDLSTM", lambda: recurrent.ConvNDLSTM(2, (4, 4), 2, 3), (4, 4, 2)
    ),
    _cell("Conv1DLSTM", lambda: recurrent.Conv1DLSTM((5,), 2, 3), (5, 2)),
    _cell("Conv2DLSTM", lambda: recurrent.Conv2DLSTM((4, 4), 2, 3), (4, 4, 2)),
    _cell(
        "Conv3DLSTM",
        lambda: recurrent.Conv3DLSTM((3, 3, 3), 2, 2),
        (3, 3, 3, 2),
    ),
    _cell("ConvNDGRU", lambda: recurrent.ConvNDGRU(2, (4, 4), 2, 3), (4, 4, 2)),
    _cell("Conv1DGRU", lambda: recurrent.Conv1DGRU((5,), 2, 3), (5, 2)),
    _cell("Conv2DGRU", lambda: recurrent.Conv2DGRU((4, 4), 2, 3), (4, 4, 2)),
    _cell(
        "Conv3DGRU", lambda: recurrent.Conv3DGRU((3, 3, 3), 2, 2), (3, 3, 3, 2)
    ),
    ModuleExample(
        "ExponentialSynapse",
        _synapse,
        (3,),
        exact=("d_rtrl", "es_d_rtrl"),
        es_decay=(math.exp(-1.0 / _SYNAPSE_TAU), 0.0),
    ),
    ModuleExample("LIF", _conv_lif, (5, 5, 2), ("d_rtrl",), input_scale=3.0),
    ModuleExample("ALIF", _alif, (3,), ("d_rtrl",), input_scale=3.0),
    ModuleExample("RecurrentLIF", _recurrent_lif, (3,), input_scale=3.0),
    ModuleExample("RecurrentALIF", _eprop, (3,), input_scale=3.0),
    ModuleExample(
        "LRU",
        lambda x: long_range.LRU(5, r_min=0.5, r_max=0.99)(x),
        (3,),
        exact=("d_rtrl",),
    ),
    ModuleExample(
        "MinGRU", lambda x: long_range.MinGRU(4)(x), (3,), exact=("d_rtrl",)
    ),
    ModuleExample(
        "MinLSTM", lambda x: long_range.MinLSTM(4)(x), (3,), exact=("d_rtrl",)
    ),
    ModuleExample(
        "LeakyReadout",
        lambda x: spiking.LeakyReadout(2, tau=_READOUT_TAU)(x),
        (3,),
        exact=("d_rtrl", "es_d_rtrl"),
        es_decay=(math.exp(-1.0 / _READOUT_TAU), 0.0),
    ),
)


MODULE_LEARNERS = ("d_rtrl", "es_d_rtrl", "rtrl", "bptt")
# Truncated BPTT with the online learners' window: the in-window term alone.
TRUNCATED_BPTT = "tbptt"


def mse(out_t: jax.Array, y_t: jax.Array) -> jax.Array:
  return jnp.mean((out_t - y_t) ** 2)


class ExampleRun(NamedTuple):
  """Gradients of one example over one sequence.

  Attributes:
    model: the transformed step.
    params: its parameters.
    state: its initial model state (no learner entries).
    xs: inputs ``(T, B, *input_shape)``.
    ys: targets.
    reference: whole-sequence BPTT gradients from :func:`bptt_grads`.
    grads: learner name -> gradients from ``sequence_grad``: the online
      learners with ``window``, ``bptt`` over the whole sequence, and
      ``"tbptt"`` (BPTT inside windows of ``window``: what is left without
      traces).
    losses: learner name -> per-step losses.
    reference_losses: per-step losses of the reference.
    approximate: learner name -> paths of the parameters for which the
      learner does not claim BPTT's gradient on this step (those its
      :class:`~haiku_etp.ApproximationWarning` names, from its verdicts);
      empty when exact.
  """

  model: hk.TransformedWithState
  params: Any
  state: Any
  xs: jax.Array
  ys: jax.Array
  reference: Any
  grads: dict
  losses: dict
  reference_losses: jax.Array
  approximate: dict


def make_module_learner(
    example: ModuleExample,
    name: str,
    model: hk.TransformedWithState,
    window: int = 1,
):
  """The registered learner ``name`` for ``example``'s model.

  ES-D-RTRL gets the example's decay and ``tbptt`` the online ``window``;
  any other registered learner is built with its defaults.
  """
  options = {}
  spec = registry.learner_spec(name)
  if "decay" in spec.options:
    options["decay"] = example.es_decay
  if "window" in spec.options:
    options["window"] = window
  return registry.make_learner(name, model, **options)


# The example programs run once, so their compile time is what counts:
# without XLA's backend optimisation they compile several times faster.
_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def run_module_example(
    example: ModuleExample,
    *,
    num_steps: int = 6,
    batch_size: int = 2,
    window: int = 1,
    dtype: Any = jnp.float32,
    learners: tuple[str, ...] = MODULE_LEARNERS + (TRUNCATED_BPTT,),
    compiler_options: Optional[Mapping[str, Any]] = None,
) -> ExampleRun:
  """Runs ``example`` through BPTT and each learner on one random sequence.

  Inputs, targets and parameters are drawn from seeds derived from the
  example's name, so runs are reproducible. Call under
  ``jax.enable_x64(True)`` for ``float64``. The oracle and every learner run
  in one ``jit`` program; the learners' :class:`~haiku_etp.ApproximationWarning`
  is not emitted (``approximate`` lists what it names).

  Args:
    example: the registered example.
    num_steps: sequence length ``T``.
    batch_size: batch size.
    window: window of the online learners and of truncated BPTT.
    dtype: floating dtype of inputs, targets and parameters.
    learners: registered learner names (:data:`MODULE_LEARNERS` and
      ``"tbptt"`` by default).
    compiler_options: XLA options of the programs; by default backend
      optimisation is off (they run once: compile time dominates).

  Returns:
    An :class:`ExampleRun`.
  """
  if compiler_options is None:
    compiler_options = _COMPILER_OPTIONS
  jit = lambda f: jax.jit(f, compiler_options=dict(compiler_options))
  seed = zlib.crc32(example.name.encode())
  model = hk.transform_with_state(example.step)
  rs = np.random.RandomState(seed)
  xs = jnp.asarray(
      example.input_scale
      * rs.normal(size=(num_steps, batch_size) + example.input_shape),
      dtype,
  )
  params, state = jit(model.init)(jax.random.PRNGKey(seed), xs[0])
  out = jax.eval_shape(model.apply, params, state, None, xs[0])[0]
  ys = jnp.asarray(rs.normal(size=(num_steps,) + out.shape), dtype)
  fns, learner_states, approximate = {}, {}, {}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", driver_lib.ApproximationWarning)
    for name in learners:
      learner = make_module_learner(example, name, model, window)
      learner_states[name] = learner.init_state(params, state, None, xs[0])
      whole = registry.learner_spec(name).whole_sequence
      fns[name] = learner.sequence_grad(mse, window=None if whole else window)
      approximate[name] = tuple(
          v.path
          for v in learner.verdicts(params, learner_states[name], None, xs[0])
          if not v.exact
      )

  def run(
      params: hk.Params,
      learner_states: dict[str, Any],
      xs: jax.Array,
      ys: jax.Array,
  ) -> tuple[Any, dict[str, Any]]:
    reference = oracles.bptt_grads(model, mse, params, state, None, xs, ys)
    results = {
        name: fn(params, learner_states[name], None, xs, ys)
        for name, fn in fns.items()
    }
    return reference, results

  (reference, reference_losses), results = jit(run)(
      params, learner_states, xs, ys
  )
  grads = {name: r.grads for name, r in results.items()}
  losses = {name: r.losses for name, r in results.items()}
  return ExampleRun(
      model,
      params,
      state,
      xs,
      ys,
      reference,
      grads,
      losses,
      reference_losses,
      approximate,
  )
