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
"""Model steps for the experiments, built from a config's ``model`` block.

Every model is one time step ``x_t -> logits_t`` (or a regression output)
made of haiku_etp modules; ``make_model`` wraps it in
``hk.transform_with_state``. Kinds:

* ``snn``: ``Linear -> LIF | ALIF -> LeakyReadout | Linear`` (optionally a
  current synapse between the input layer and the neurons), for spiking
  tasks (cue accumulation, SHD); ``recurrent=True`` makes the neurons
  ``RecurrentLIF | RecurrentALIF`` (e-prop's network with ``alif``);
* ``conv_snn``: ``Conv2D -> LIF -> flatten -> LeakyReadout`` for event
  frames (N-MNIST);
* ``gru``, ``lstm``, ``rnn``: a rate cell and a ``Linear`` readout
  (``recurrence="elementwise"``: the element-wise GRU/LSTM);
* ``min_gru``, ``min_lstm``: the minimal cells and a ``Linear`` readout;
* ``leaky_rnn``: Murray's leaky rate network (``alpha``, default 0.1) and a
  ``Linear`` readout, RFLO's network;
* ``haiku_deep_rnn``: dm-haiku's own ``hk.DeepRNN([hk.LSTM(n), jax.nn.relu,
  hk.LSTM(n)])`` (its RNN example's core) and an ``hk.Linear`` readout,
  unmodified, through ``haiku_etp.RNNCoreStep``;
* ``lru``: a stack of ``num_layers`` blocks on a ``Linear`` encoder of
  ``width`` features, each block ``u <- u + gelu(Linear(LRU(u)))`` (an LRU of
  ``hidden_size`` complex units, radii in ``[r_min, r_max]``), then a
  ``Linear`` readout. D-RTRL is exact on it (cross-group traces carry each
  layer's credit through the layers above).
"""

from typing import Any, Callable

import haiku as hk
import jax

import haiku_etp

KINDS = (
    "snn",
    "conv_snn",
    "gru",
    "lstm",
    "rnn",
    "min_gru",
    "min_lstm",
    "lru",
    "leaky_rnn",
    "haiku_deep_rnn",
)
NEURONS = ("lif", "alif")
READOUTS = ("leaky", "linear")
RECURRENCES = ("dense", "elementwise")


def _check(model_config) -> None:
  kind = model_config.get("kind")
  if kind not in KINDS:
    raise ValueError(f"config.model.kind must be one of {KINDS}, got {kind!r}.")
  hidden = model_config.get("hidden_size", 0)
  if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
    raise ValueError(
        f"config.model.hidden_size must be an int >= 1, got {hidden!r}."
    )
  if (
      kind in ("gru", "lstm")
      and model_config.get("recurrence", "dense") not in RECURRENCES
  ):
    raise ValueError(
        f"config.model.recurrence must be one of "
        f"{RECURRENCES}, got {model_config.get('recurrence')!r}."
    )
  if kind == "lru":
    for field in ("num_layers", "width"):
      value = model_config.get(field, 1)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"config.model.{field} must be an int >= 1, got {value!r}."
        )
  if kind in ("snn", "conv_snn"):
    if model_config.get("neuron", "lif") not in NEURONS:
      raise ValueError(
          f"config.model.neuron must be one of {NEURONS}, got "
          f"{model_config.get('neuron')!r}."
      )
    if not isinstance(model_config.get("recurrent", False), bool):
      raise ValueError(
          "config.model.recurrent must be True or False, got "
          f"{model_config.get('recurrent')!r}."
      )
    if kind == "conv_snn" and model_config.get("recurrent", False):
      raise ValueError(
          "config.model.recurrent=True needs kind='snn' (recurrent neurons "
          "take (batch, neurons) inputs)."
      )
    if model_config.get("readout", "leaky") not in READOUTS:
      raise ValueError(
          f"config.model.readout must be one of {READOUTS}, got "
          f"{model_config.get('readout')!r}."
      )


def _neuron(cfg, recurrent: bool = False):
  common = dict(
      tau=cfg.get("tau", 20.0),
      threshold=cfg.get("threshold", 1.0),
      reset=cfg.get("reset", "soft"),
  )
  if cfg.get("neuron", "lif") == "alif":
    make = haiku_etp.RecurrentALIF if recurrent else haiku_etp.ALIF
    return make(
        tau_adapt=cfg.get("tau_adapt", 200.0),
        beta_adapt=cfg.get("beta_adapt", 1.0),
        **common,
    )
  return (haiku_etp.RecurrentLIF if recurrent else haiku_etp.LIF)(**common)


def _readout(cfg, output_size: int) -> Callable[[jax.Array], jax.Array]:
  if cfg.get("readout", "leaky") == "leaky":
    return haiku_etp.LeakyReadout(
        output_size, tau=cfg.get("readout_tau", 10.0), name="readout"
    )
  return haiku_etp.Linear(output_size, name="readout")


def make_step(
    model_config, output_size: int, with_spikes: bool = False
) -> Callable[[Any], Any]:
  """The step function of ``model_config`` with ``output_size`` outputs.

  Args:
    model_config: the config's ``model`` block.
    output_size: readout units.
    with_spikes: spiking models also return the hidden layer's spikes,
      ``(out_t, s_t)`` (for rasters; the parameters are the same).

  Raises:
    ValueError: for an unknown kind, neuron or readout, or a bad size.
  """
  _check(model_config)
  cfg = dict(model_config)
  kind, hidden = cfg["kind"], cfg["hidden_size"]
  gain = cfg.get("input_gain", 1.0)

  def snn(x_t):
    i_t = haiku_etp.Linear(hidden, name="input")(gain * x_t)
    if cfg.get("synapse_tau"):
      i_t = haiku_etp.ExponentialSynapse(tau=cfg["synapse_tau"])(i_t)
    s_t = _neuron(cfg, cfg.get("recurrent", False))(i_t)
    out_t = _readout(cfg, output_size)(s_t)
    return (out_t, s_t) if with_spikes else out_t

  def conv_snn(x_t):
    i_t = haiku_etp.Conv2D(
        hidden,
        cfg.get("kernel_size", 3),
        stride=cfg.get("stride", 2),
        name="conv",
    )(
        gain * x_t
    )  # pyformat: disable
    s_t = _neuron(cfg)(i_t)
    out_t = _readout(cfg, output_size)(s_t.reshape(s_t.shape[0], -1))
    return (out_t, s_t) if with_spikes else out_t

  def cell(x_t):
    if kind in ("gru", "lstm"):
      make = dict(gru=haiku_etp.GRU, lstm=haiku_etp.LSTM)[kind]
      core = make(hidden, recurrence=cfg.get("recurrence", "dense"))
    elif kind == "leaky_rnn":
      core = haiku_etp.LeakyRNN(hidden, alpha=cfg.get("alpha", 0.1))
    else:
      make = dict(min_gru=haiku_etp.MinGRU, min_lstm=haiku_etp.MinLSTM)
      core = make.get(kind, haiku_etp.VanillaRNN)(hidden)
    return haiku_etp.Linear(output_size, name="readout")(core(x_t))

  def lru(x_t):
    width = cfg.get("width", hidden)
    u = haiku_etp.Linear(width, name="encoder")(x_t)
    for layer in range(cfg.get("num_layers", 1)):
      y = haiku_etp.LRU(
          hidden,
          output_size=width,
          r_min=cfg.get("r_min", 0.0),
          r_max=cfg.get("r_max", 1.0),
          max_phase=cfg.get("max_phase", 6.283185307179586),
          name=f"lru_{layer}",
      )(u)
      u = u + jax.nn.gelu(haiku_etp.Linear(width, name=f"mlp_{layer}")(y))
    return haiku_etp.Linear(output_size, name="readout")(u)

  def haiku_deep_rnn(x_t):
    core = hk.DeepRNN([hk.LSTM(hidden), jax.nn.relu, hk.LSTM(hidden)])
    h_t = haiku_etp.RNNCoreStep(core)(x_t)
    return hk.Linear(output_size, name="readout")(h_t)

  steps = dict(
      snn=snn, conv_snn=conv_snn, lru=lru, haiku_deep_rnn=haiku_deep_rnn
  )
  return steps.get(kind, cell)


def make_model(
    model_config, output_size: int, with_spikes: bool = False
) -> hk.TransformedWithState:
  """``hk.transform_with_state`` of :func:`make_step`."""
  return hk.transform_with_state(
      make_step(model_config, output_size, with_spikes)
  )
