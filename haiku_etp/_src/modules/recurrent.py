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
r"""Rate-based recurrent cells that keep their memory in hidden state.

Each cell is a step module, not an ``hk.RNNCore``: it is called once per
time step, ``out_t = cell(x_t)``, and reads and writes its recurrent memory
with :func:`haiku_etp.get_hidden_state` / :func:`haiku_etp.set_hidden_state`
instead of taking and returning it, so the learners find it without being
told. A model is the step wrapped in ``hk.transform_with_state``; where Haiku
unrolls a core with ``hk.dynamic_unroll(core, xs, core.initial_state(B))``,
a learner unrolls the step from the state it initialised,
``outs, state = learner.unroll(params, state, rng, xs)`` (and
``learner.sequence_grad`` trains it).

``VanillaRNN``, ``GRU``, ``LSTM`` and ``Conv1DLSTM``/``Conv2DLSTM``/
``Conv3DLSTM`` create the parameters of their Haiku namesakes (names, shapes,
default initialisers): a checkpoint of ``hk.GRU`` loads into ``GRU`` and,
stepped over the same inputs from zero state, gives the same outputs. The
convolutional GRUs follow ``hk.GRU``'s equations with convolutions.

**What the online learners see.** Every gate is its own ETP relation (one
slice of the Haiku weight each), aligned with the hidden state, so each gate
weight gets an eligibility trace. The recurrent weights mix positions, so the
compiler cuts the path ``h_{t-1} -> W_h -> h_t`` when it forms ``D``:
D-RTRL and ES-D-RTRL are approximations on these cells (their cosine to BPTT
is measured in the tests and benchmarks). In the GRU the reset gate
:math:`r_t` reaches :math:`h_t` only through the candidate's recurrent weight,
:math:`W_{ha}(r_t \odot h_{t-1})`; its relations (the ``r`` slices of ``w_i``,
``w_h`` and ``b``) are reported as ``relation_through_cut`` and get the
in-window gradient only: with ``window=1`` the exact gradient of the current
step's loss through :math:`h_t`, with a window of ``k`` steps ``k``-step
truncated BPTT, and no credit from steps beyond the window.
"""

from typing import Callable, Optional, Sequence, Union

import haiku as hk
import jax
import jax.numpy as jnp

from haiku_etp._src.core import checks
from haiku_etp._src.ops import conv as conv_lib
from haiku_etp._src.ops import dense as dense_lib
from haiku_etp._src.ops import elementwise as elementwise_lib
from haiku_etp._src.modules import layers
from haiku_etp._src.core import state as state_lib


def hidden(
    cell: str, name: str, shape: Sequence[int], dtype: jax.typing.DTypeLike
) -> jax.Array:
  """``h_tm1`` of ``shape`` in the inputs' ``dtype``; a stored state of
  another shape, or inputs of a non-floating dtype, is an error."""
  value = state_lib.hidden_state_like_input(cell, name, shape, dtype)
  checks.assert_shape(
      value,
      tuple(shape),
      custom_message=(
          f"{cell} hidden state {name!r} has shape {value.shape} but this input "
          f"needs {tuple(shape)}; was the state initialised for another batch "
          "size or input shape?"
      ),
  )
  return value


def check_rank(cell: str, x: jax.Array, ranks: Sequence[int]) -> None:
  if x.ndim not in ranks:
    raise ValueError(
        f"Input to {cell} must have rank {' or '.join(map(str, ranks))}, got "
        f"shape {tuple(x.shape)}."
    )


def _gru_update(
    x_t: jax.Array,
    h_tm1: jax.Array,
    w_i: jax.Array,
    w_h: jax.Array,
    b: Optional[jax.Array],
    size: int,
    op: Callable[..., jax.Array],
) -> jax.Array:
  """``hk.GRU``'s update with one ETP op per gate and side.

  ``op(inputs, weight, bias)`` is the dense or conv op; weights and bias are
  sliced along their last axis into the ``z``, ``r`` and ``a`` parts.
  """
  part = lambda a, k: a[..., k * size : (k + 1) * size]
  z = jax.nn.sigmoid(
      op(x_t, part(w_i, 0), part(b, 0)) + op(h_tm1, part(w_h, 0))
  )
  r = jax.nn.sigmoid(
      op(x_t, part(w_i, 1), part(b, 1)) + op(h_tm1, part(w_h, 1))
  )
  a = jnp.tanh(op(x_t, part(w_i, 2), part(b, 2)) + op(r * h_tm1, part(w_h, 2)))
  return (1.0 - z) * h_tm1 + z * a


RECURRENCES = ("dense", "elementwise")


def _check_recurrence(recurrence: str) -> str:
  if recurrence not in RECURRENCES:
    raise ValueError(
        f"recurrence must be one of {RECURRENCES}, got {recurrence!r}."
    )
  return recurrence


def _default_w_h_init(recurrence: str) -> hk.initializers.Initializer:
  if recurrence == "elementwise":
    return hk.initializers.RandomUniform(-1.0, 1.0)
  return hk.initializers.VarianceScaling()


def _elementwise_op(
    inputs: jax.Array, weight: jax.Array, bias: Optional[jax.Array] = None
) -> jax.Array:
  """The dense op's stand-in for ``_gru_update``: a ``(I, H)`` weight is an
  input weight (dense); a ``(H,)`` weight multiplies the hidden state unit
  by unit, through the elementwise ETP op."""
  if weight.ndim == 2:
    return dense_lib.dense(inputs, weight, bias)
  y = elementwise_lib.elementwise(weight) * inputs
  return y if bias is None else y + bias


def _lstm_update(
    gates: Sequence[jax.Array], c_tm1: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """``hk.LSTM``'s update from the gate pre-activations ``(i, g, f, o)``."""
  i, g, f, o = gates
  c_t = jax.nn.sigmoid(f + 1.0) * c_tm1 + jax.nn.sigmoid(i) * jnp.tanh(g)
  h_t = jax.nn.sigmoid(o) * jnp.tanh(c_t)
  return c_t, h_t


class VanillaRNN(hk.Module):
  r"""Fully connected RNN cell with hidden state ``h``.

  .. math::
    h_t = \operatorname{act}(W_i x_t + b_i + W_h h_{t-1} + b_h)

  Parameters are those of ``hk.VanillaRNN`` (two ``Linear`` layers named
  ``linear`` and ``linear_1``); the activation is ReLU as there, or any
  elementwise ``activation``. ``D`` is zero (the only memory path crosses
  ``W_h``), so the online learners see only the instantaneous term.

  A step module with its memory in hidden state, not an ``hk.RNNCore``: no
  ``initial_state``, and ``learner.unroll`` takes the place of
  ``hk.dynamic_unroll``:

  >>> import haiku as hk, jax, jax.numpy as jnp, haiku_etp
  >>> model = hk.transform_with_state(lambda x: VanillaRNN(4)(x))
  >>> learner = haiku_etp.bptt(model)  # or d_rtrl / es_d_rtrl
  >>> xs = jnp.ones((5, 2, 3))  # (T, B, I)
  >>> params, state = learner.init(jax.random.PRNGKey(0), xs[0])
  >>> state["vanilla_rnn"]["h:hidden"].shape
  (2, 4)
  >>> outs, state = learner.unroll(params, state, None, xs)
  >>> outs.shape
  (5, 2, 4)
  """

  def __init__(
      self,
      hidden_size: int,
      double_bias: bool = True,
      activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
      name: Optional[str] = None,
  ):
    """Constructs the cell.

    Args:
      hidden_size: number of hidden units.
      double_bias: whether the hidden-to-hidden layer has its own bias.
      activation: elementwise nonlinearity.
      name: module name.

    Raises:
      ValueError: if ``hidden_size`` is not a positive int.
    """
    super().__init__(name=name)
    self.hidden_size = layers.check_positive(hidden_size, "hidden_size")
    self.double_bias = double_bias
    self.activation = activation

  def __call__(self, x_t: jax.Array) -> jax.Array:
    """One step: ``(B, I)`` or ``(I,)`` inputs to ``h_t``."""
    x_t = jnp.asarray(x_t)
    check_rank("VanillaRNN", x_t, (1, 2))
    h_tm1 = hidden(
        "VanillaRNN", "h", x_t.shape[:-1] + (self.hidden_size,), x_t.dtype
    )
    input_to_hidden = layers.Linear(self.hidden_size)
    hidden_to_hidden = layers.Linear(
        self.hidden_size, with_bias=self.double_bias
    )
    h_t = self.activation(input_to_hidden(x_t) + hidden_to_hidden(h_tm1))
    state_lib.set_hidden_state("h", h_t)
    return h_t


class LeakyRNN(hk.Module):
  r"""Leaky rate network (Murray, 2019) with hidden state ``h``.

  .. math::
    h_t = (1 - \alpha)\, h_{t-1}
      + \alpha\, \operatorname{act}(W_i x_t + b + W_h h_{t-1})

  Parameters: two ``Linear`` layers, ``linear`` (input, with bias) and
  ``linear_1`` (hidden, no bias). ``D`` is the leak ``1 - alpha`` and the
  tail ``alpha act'``, so D-RTRL's traces on it are RFLO's eligibility
  traces (:func:`haiku_etp.rflo`); the recurrent weight's path is the cut.

  >>> import haiku as hk, jax, jax.numpy as jnp
  >>> model = hk.transform_with_state(lambda x: LeakyRNN(4, alpha=0.1)(x))
  >>> params, state = model.init(jax.random.PRNGKey(0), jnp.ones((2, 3)))
  >>> state["leaky_rnn"]["h:hidden"].shape
  (2, 4)
  """

  def __init__(
      self,
      hidden_size: int,
      alpha: float = 0.1,
      activation: Callable[[jax.Array], jax.Array] = jnp.tanh,
      name: Optional[str] = None,
  ):
    """Constructs the network.

    Args:
      hidden_size: number of units.
      alpha: ``dt / tau``, in ``(0, 1]`` (1: no leak).
      activation: elementwise nonlinearity.
      name: module name.

    Raises:
      ValueError: for a non-positive ``hidden_size`` or ``alpha`` outside
        ``(0, 1]``.
    """
    super().__init__(name=name)
    self.hidden_size = layers.check_positive(hidden_size, "hidden_size")
    if isinstance(alpha, bool) or not (
        isinstance(alpha, (int, float)) and 0 < alpha <= 1
    ):
      raise ValueError(f"alpha must be a number in (0, 1], got {alpha!r}.")
    self.alpha = float(alpha)
    self.activation = activation

  def __call__(self, x_t: jax.Array) -> jax.Array:
    """One step: ``(B, I)`` or ``(I,)`` inputs to ``h_t``."""
    x_t = jnp.asarray(x_t)
    check_rank("LeakyRNN", x_t, (1, 2))
    h_tm1 = hidden(
        "LeakyRNN", "h", x_t.shape[:-1] + (self.hidden_size,), x_t.dtype
    )
    u = layers.Linear(self.hidden_size)(x_t) + layers.Linear(
        self.hidden_size, with_bias=False
    )(h_tm1)
    h_t = (1.0 - self.alpha) * h_tm1 + self.alpha * self.activation(u)
    state_lib.set_hidden_state("h", h_t)
    return h_t


class GRU(hk.Module):
  r"""Gated recurrent unit with hidden state ``h``, as ``hk.GRU``.

  .. math::
    z_t &= \sigma(W_{iz} x_t + W_{hz} h_{t-1} + b_z) \\
    r_t &= \sigma(W_{ir} x_t + W_{hr} h_{t-1} + b_r) \\
    a_t &= \tanh(W_{ia} x_t + W_{ha} (r_t \odot h_{t-1}) + b_a) \\
    h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot a_t

  Parameters ``w_i`` ``(I, 3H)``, ``w_h`` ``(H, 3H)`` and ``b`` ``(3H,)``,
  gates in the order ``z, r, a``, as in ``hk.GRU``. The reset-gate slices
  reach ``h`` only through ``W_{ha}`` and get the in-window gradient only
  (see the module docstring).

  A step module with its memory in hidden state, not an ``hk.RNNCore``: no
  ``initial_state``, and ``learner.unroll`` takes the place of
  ``hk.dynamic_unroll``:

  >>> import haiku as hk, jax, jax.numpy as jnp, haiku_etp
  >>> model = hk.transform_with_state(lambda x: GRU(4)(x))
  >>> learner = haiku_etp.bptt(model)  # or d_rtrl / es_d_rtrl
  >>> xs = jnp.ones((5, 2, 3))  # (T, B, I)
  >>> params, state = learner.init(jax.random.PRNGKey(0), xs[0])
  >>> params["gru"]["w_h"].shape
  (4, 12)
  >>> outs, state = learner.unroll(params, state, None, xs)
  >>> outs.shape
  (5, 2, 4)
  """

  def __init__(
      self,
      hidden_size: int,
      w_i_init: Optional[hk.initializers.Initializer] = None,
      w_h_init: Optional[hk.initializers.Initializer] = None,
      b_init: Optional[hk.initializers.Initializer] = None,
      recurrence: str = "dense",
      name: Optional[str] = None,
  ):
    """Constructs the cell.

    Args:
      hidden_size: number of hidden units.
      w_i_init: input weight initialiser (``VarianceScaling()`` by default).
      w_h_init: recurrent weight initialiser (``VarianceScaling()``; with
        ``recurrence="elementwise"``, uniform on ``[-1, 1]``).
      b_init: bias initialiser (zeros).
      recurrence: ``"dense"`` (``hk.GRU``'s ``(H, 3H)`` recurrent weight) or
        ``"elementwise"``: one recurrent weight per unit and gate, ``w_h`` of
        shape ``(3H,)``, ``W_h h`` replaced by ``w_h * h`` (Irie et al.'s
        element-wise recurrence). D-RTRL is exact on the element-wise cell.
      name: module name.

    Raises:
      ValueError: if ``hidden_size`` is not a positive int or ``recurrence``
        is not one of the two.
    """
    super().__init__(name=name)
    self.hidden_size = layers.check_positive(hidden_size, "hidden_size")
    self.recurrence = _check_recurrence(recurrence)
    self.w_i_init = w_i_init or hk.initializers.VarianceScaling()
    self.w_h_init = w_h_init or _default_w_h_init(self.recurrence)
    self.b_init = b_init or jnp.zeros

  def __call__(self, x_t: jax.Array) -> jax.Array:
    """One step: ``(B, I)`` or ``(I,)`` inputs to ``h_t``."""
    x_t = jnp.asarray(x_t)
    check_rank("GRU", x_t, (1, 2))
    size = self.hidden_size
    dtype = x_t.dtype
    h_tm1 = hidden("GRU", "h", x_t.shape[:-1] + (size,), dtype)
    w_i = hk.get_parameter(
        "w_i", (x_t.shape[-1], 3 * size), dtype, init=self.w_i_init
    )
    elementwise = self.recurrence == "elementwise"
    w_h_shape = (3 * size,) if elementwise else (size, 3 * size)
    w_h = hk.get_parameter("w_h", w_h_shape, dtype, init=self.w_h_init)
    # Created after w_h, as in hk.GRU (the init order fixes the values).
    b = hk.get_parameter("b", (3 * size,), dtype, init=self.b_init)
    op = _elementwise_op if elementwise else dense_lib.dense
    h_t = _gru_update(x_t, h_tm1, w_i, w_h, b, size, op)
    state_lib.set_hidden_state("h", h_t)
    return h_t


class LSTM(hk.Module):
  r"""Long short-term memory cell with hidden states ``c`` and ``h``.

  .. math::
    i_t, g_t, f_t, o_t &= \operatorname{split}(W [x_t, h_{t-1}] + b) \\
    c_t &= \sigma(f_t + 1) \odot c_{t-1} + \sigma(i_t) \odot \tanh(g_t) \\
    h_t &= \sigma(o_t) \odot \tanh(c_t)

  Parameters are those of ``hk.LSTM``: one ``Linear`` named ``linear`` with
  ``w`` of shape ``(I + H, 4H)``. ``c`` and ``h`` form one hidden group
  (``S = 2``); the path ``c_{t-1} -> c_t`` is traced exactly, the path through
  ``h_{t-1}`` and ``W`` is cut.

  A step module with its memory in hidden state, not an ``hk.RNNCore``: no
  ``initial_state``, and ``learner.unroll`` takes the place of
  ``hk.dynamic_unroll``:

  >>> import haiku as hk, jax, jax.numpy as jnp, haiku_etp
  >>> model = hk.transform_with_state(lambda x: LSTM(4)(x))
  >>> learner = haiku_etp.bptt(model)  # or d_rtrl / es_d_rtrl
  >>> xs = jnp.ones((5, 2, 3))  # (T, B, I)
  >>> params, state = learner.init(jax.random.PRNGKey(0), xs[0])
  >>> sorted(state["lstm"])
  ['c:hidden', 'h:hidden']
  >>> outs, state = learner.unroll(params, state, None, xs)
  >>> outs.shape
  (5, 2, 4)
  """

  def __init__(
      self,
      hidden_size: int,
      recurrence: str = "dense",
      name: Optional[str] = None,
  ):
    """Constructs the cell.

    Args:
      hidden_size: number of hidden units.
      recurrence: ``"dense"`` (``hk.LSTM``: one ``Linear`` on ``[x, h]``) or
        ``"elementwise"``: the ``Linear`` reads ``x`` alone (``w`` of shape
        ``(I, 4H)``) and each gate adds ``w_h * h_{t-1}`` with one weight per
        unit and gate (``w_h`` of shape ``(4H,)``, uniform on ``[-1, 1]``;
        Irie et al.'s element-wise LSTM). D-RTRL is exact on it.
      name: module name.

    Raises:
      ValueError: if ``hidden_size`` is not a positive int or ``recurrence``
        is not one of the two.
    """
    super().__init__(name=name)
    self.hidden_size = layers.check_positive(hidden_size, "hidden_size")
    self.recurrence = _check_recurrence(recurrence)

  def __call__(self, x_t: jax.Array) -> jax.Array:
    """One step: ``(B, I)`` or ``(I,)`` inputs to ``h_t``."""
    x_t = jnp.asarray(x_t)
    check_rank("LSTM", x_t, (1, 2))
    size = self.hidden_size
    shape = x_t.shape[:-1] + (size,)
    c_tm1 = hidden("LSTM", "c", shape, x_t.dtype)
    h_tm1 = hidden("LSTM", "h", shape, x_t.dtype)
    if self.recurrence == "elementwise":
      gates: Sequence[jax.Array] = layers.Linear(4 * size).split(x_t, 4)
      w_h = hk.get_parameter(
          "w_h",
          (4 * size,),
          x_t.dtype,
          init=_default_w_h_init("elementwise"),
      )
      gates = [
          gate + _elementwise_op(h_tm1, w_h[k * size : (k + 1) * size])
          for k, gate in enumerate(gates)
      ]
    else:
      x_and_h = jnp.concatenate([x_t, h_tm1], axis=-1)
      gates = layers.Linear(4 * size).split(x_and_h, 4)
    c_t, h_t = _lstm_update(gates, c_tm1)
    state_lib.set_hidden_state("c", c_t)
    state_lib.set_hidden_state("h", h_t)
    return h_t


class _ConvCell(hk.Module):
  """Shared checks of the convolutional cells (channels-last, SAME)."""

  def __init__(
      self,
      num_spatial_dims: int,
      input_shape: Sequence[int],
      output_channels: int,
      kernel_shape: Union[int, Sequence[int]],
      name: Optional[str] = None,
  ):
    """Constructs the cell.

    Args:
      num_spatial_dims: number of spatial axes.
      input_shape: spatial shape of the inputs (no batch, no channels).
      output_channels: channels of the hidden state.
      kernel_shape: kernel size, an int or one per spatial axis.
      name: module name.

    Raises:
      ValueError: for non-positive sizes or an ``input_shape`` of the wrong
        length.
    """
    super().__init__(name=name)
    n = layers.check_positive(num_spatial_dims, "num_spatial_dims")
    self.num_spatial_dims = n
    self.input_shape: Optional[tuple[int, ...]]
    try:
      self.input_shape = tuple(
          layers.check_positive(s, "") for s in input_shape
      )
    except (TypeError, ValueError):
      self.input_shape = None
    if self.input_shape is None or len(self.input_shape) != n:
      raise ValueError(
          f"input_shape must be {n} positive spatial sizes (no batch, no "
          f"channels), got {input_shape!r}."
      )
    self.output_channels = layers.check_positive(
        output_channels, "output_channels"
    )
    self.kernel_shape = layers.replicate(kernel_shape, n, "kernel_shape")

  def _check_input(self, x_t: jax.Array):
    cell = type(self).__name__
    n = self.num_spatial_dims
    check_rank(cell, x_t, (n + 1, n + 2))
    spatial = x_t.shape[-n - 1 : -1]
    if spatial != self.input_shape:
      raise ValueError(
          f"Input to {cell} has spatial shape {spatial}, but the cell was "
          f"built for input_shape {self.input_shape}; input shape "
          f"{tuple(x_t.shape)}."
      )
    return x_t.shape[:-1] + (self.output_channels,)


class ConvNDLSTM(_ConvCell):
  r"""N-D convolutional LSTM with hidden states ``c`` and ``h``.

  .. math::
    i_t, g_t, f_t, o_t &= \operatorname{split}(W_i * x_t + W_h * h_{t-1} + b)
    \\
    c_t &= \sigma(f_t + 1) \odot c_{t-1} + \sigma(i_t) \odot \tanh(g_t) \\
    h_t &= \sigma(o_t) \odot \tanh(c_t)

  Parameters are those of ``hk.ConvNDLSTM``: two ``ConvND`` layers named
  ``input_to_hidden`` and ``hidden_to_hidden`` with ``4 * output_channels``
  outputs, channels-last, ``SAME`` padding. Inputs are ``(B, *input_shape,
  C)`` or unbatched ``(*input_shape, C)``.

  A step module with its memory in hidden state (``c`` and ``h``), not an
  ``hk.RNNCore``: no ``initial_state``, and ``learner.unroll`` takes the
  place of ``hk.dynamic_unroll``::

    cell = lambda x: ConvNDLSTM(2, (4, 4), 2, 3)(x)
    learner = haiku_etp.bptt(hk.transform_with_state(cell))
    xs = jnp.ones((5, 2, 4, 4, 1))  # (T, B, H, W, C)
    params, state = learner.init(jax.random.PRNGKey(0), xs[0])
    outs, state = learner.unroll(params, state, None, xs)  # (5, 2, 4, 4, 2)
  """

  def __call__(self, x_t: jax.Array) -> jax.Array:
    """One step: inputs to ``h_t`` of shape ``(..., output_channels)``."""
    x_t = jnp.asarray(x_t)
    shape = self._check_input(x_t)
    c_tm1 = hidden(type(self).__name__, "c", shape, x_t.dtype)
    h_tm1 = hidden(type(self).__name__, "h", shape, x_t.dtype)
    conv = lambda name: layers.ConvND(
        self.num_spatial_dims,
        4 * self.output_channels,
        self.kernel_shape,
        name=name,
    )
    gates_x = conv("input_to_hidden").split(x_t, 4)
    gates_h = conv("hidden_to_hidden").split(h_tm1, 4)
    c_t, h_t = _lstm_update(
        [gx + gh for gx, gh in zip(gates_x, gates_h)], c_tm1
    )
    state_lib.set_hidden_state("c", c_t)
    state_lib.set_hidden_state("h", h_t)
    return h_t


class ConvNDGRU(_ConvCell):
  r"""Convolutional GRU with hidden state ``h``.

  ``hk.GRU``'s equations with the products replaced by ``SAME``
  convolutions (channels-last):

  .. math::
    z_t &= \sigma(W_{iz} * x_t + W_{hz} * h_{t-1} + b_z) \\
    r_t &= \sigma(W_{ir} * x_t + W_{hr} * h_{t-1} + b_r) \\
    a_t &= \tanh(W_{ia} * x_t + W_{ha} * (r_t \odot h_{t-1}) + b_a) \\
    h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot a_t

  Parameters ``w_i`` ``(*kernel_shape, C_in, 3C)``, ``w_h`` ``(*kernel_shape,
  C, 3C)`` and ``b`` ``(3C,)``, gates in the order ``z, r, a``. As in
  :class:`GRU`, the reset-gate slices get the in-window gradient only.

  A step module with its memory in hidden state (``h``), not an
  ``hk.RNNCore``: no ``initial_state``, and ``learner.unroll`` takes the
  place of ``hk.dynamic_unroll``::

    cell = lambda x: ConvNDGRU(2, (4, 4), 2, 3)(x)
    learner = haiku_etp.bptt(hk.transform_with_state(cell))
    xs = jnp.ones((5, 2, 4, 4, 1))  # (T, B, H, W, C)
    params, state = learner.init(jax.random.PRNGKey(0), xs[0])
    outs, state = learner.unroll(params, state, None, xs)  # (5, 2, 4, 4, 2)
  """

  def __init__(
      self,
      num_spatial_dims: int,
      input_shape: Sequence[int],
      output_channels: int,
      kernel_shape: Union[int, Sequence[int]],
      w_i_init: Optional[hk.initializers.Initializer] = None,
      w_h_init: Optional[hk.initializers.Initializer] = None,
      b_init: Optional[hk.initializers.Initializer] = None,
      name: Optional[str] = None,
  ):
    """Constructs the cell.

    Args:
      num_spatial_dims: number of spatial axes.
      input_shape: spatial shape of the inputs (no batch, no channels).
      output_channels: channels of the hidden state.
      kernel_shape: kernel size, an int or one per spatial axis.
      w_i_init: input kernel initialiser (``VarianceScaling()`` by default).
      w_h_init: recurrent kernel initialiser (``VarianceScaling()``).
      b_init: bias initialiser (zeros).
      name: module name.

    Raises:
      ValueError: for non-positive sizes or an ``input_shape`` of the wrong
        length.
    """
    super().__init__(
        num_spatial_dims, input_shape, output_channels, kernel_shape, name
    )
    self.w_i_init = w_i_init or hk.initializers.VarianceScaling()
    self.w_h_init = w_h_init or hk.initializers.VarianceScaling()
    self.b_init = b_init or jnp.zeros

  def __call__(self, x_t: jax.Array) -> jax.Array:
    """One step: inputs to ``h_t`` of shape ``(..., output_channels)``."""
    x_t = jnp.asarray(x_t)
    shape = self._check_input(x_t)
    dtype = x_t.dtype
    h_tm1 = hidden(type(self).__name__, "h", shape, dtype)
    size = self.output_channels
    w_i = hk.get_parameter(
        "w_i",
        self.kernel_shape + (x_t.shape[-1], 3 * size),
        dtype,
        init=self.w_i_init,
    )
    w_h = hk.get_parameter(
        "w_h", self.kernel_shape + (size, 3 * size), dtype, init=self.w_h_init
    )
    b = hk.get_parameter("b", (3 * size,), dtype, init=self.b_init)
    dn = layers.dimension_numbers(self.num_spatial_dims, channels_last=True)
    unbatched = x_t.ndim == self.num_spatial_dims + 1

    def op(
        inputs: jax.Array, kernel: jax.Array, bias: Optional[jax.Array] = None
    ) -> jax.Array:
      if unbatched:
        inputs = inputs[None]
      y = conv_lib.conv(inputs, kernel, bias, dimension_numbers=dn)
      return y[0] if unbatched else y

    h_t = _gru_update(x_t, h_tm1, w_i, w_h, b, size, op)
    state_lib.set_hidden_state("h", h_t)
    return h_t


class Conv1DLSTM(ConvNDLSTM):
  """1-D convolutional LSTM, as ``hk.Conv1DLSTM``; see :class:`ConvNDLSTM`.

  A step module with its memory in hidden state (``c`` and ``h``), not an
  ``hk.RNNCore``: no ``initial_state``, and ``learner.unroll`` takes the
  place of ``hk.dynamic_unroll``::

    model = hk.transform_with_state(lambda x: Conv1DLSTM((6,), 2, 3)(x))
    learner = haiku_etp.bptt(model)  # or d_rtrl / es_d_rtrl
    xs = jnp.ones((5, 2, 6, 1))  # (T, B, W, C)
    params, state = learner.init(jax.random.PRNGKey(0), xs[0])
    outs, state = learner.unroll(params, state, None, xs)  # (5, 2, 6, 2)
  """

  def __init__(
      self,
      input_shape: Sequence[int],
      output_channels: int,
      kernel_shape: Union[int, Sequence[int]],
      name: Optional[str] = None,
  ):
    """Constructs the cell.

    Args:
      input_shape: spatial shape ``(W,)`` of the inputs (no batch, no
        channels).
      output_channels: channels of the hidden state.
      kernel_shape: kernel size, an int or a sequence of one.
      name: module name.

    Raises:
      ValueError: for non-positive sizes or an ``input_shape`` of the wrong
        length.
    """
    super().__init__(1, input_shape, output_channels, kernel_shape, name)


class Conv2DLSTM(ConvNDLSTM):
  """2-D convolutional LSTM, as ``hk.Conv2DLSTM``; see :class:`ConvNDLSTM`.

  A step module with its memory in hidden state (``c`` and ``h``), not an
  ``hk.RNNCore``: no ``initial_state``, and ``learner.unroll`` takes the
  place of ``hk.dynamic_unroll``::

    model = hk.transform_with_state(lambda x: Conv2DLSTM((4, 4), 2, 3)(x))
    learner = haiku_etp.bptt(model)  # or d_rtrl / es_d_rtrl
    xs = jnp.ones((5, 2, 4, 4, 1))  # (T, B, H, W, C)
    params, state = learner.init(jax.random.PRNGKey(0), xs[0])
    outs, state = learner.unroll(params, state, None, xs)  # (5, 2, 4, 4, 2)
  """

  def __init__(
      self,
      input_shape: Sequence[int],
      output_channels: int,
      kernel_shape: Union[int, Sequence[int]],
      name: Optional[str] = None,
  ):
    """Constructs the cell.

    Args:
      input_shape: spatial shape ``(H, W)`` of the inputs (no batch, no
        channels).
      output_channels: channels of the hidden state.
      kernel_shape: kernel size, an int or a sequence of 2.
      name: module name.

    Raises:
      ValueError: for non-positive sizes or an ``input_shape`` of the wrong
        length.
    """
    super().__init__(2, input_shape, output_channels, kernel_shape, name)


class Conv3DLSTM(ConvNDLSTM):
  """3-D convolutional LSTM, as ``hk.Conv3DLSTM``; see :class:`ConvNDLSTM`.

  A step module with its memory in hidden state (``c`` and ``h``), not an
  ``hk.RNNCore``: no ``initial_state``, and ``learner.unroll`` takes the
  place of ``hk.dynamic_unroll``::

    cell = lambda x: Conv3DLSTM((3, 3, 3), 2, 3)(x)
    model = hk.transform_with_state(cell)
    learner = haiku_etp.bptt(model)  # or d_rtrl / es_d_rtrl
    xs = jnp.ones((5, 2, 3, 3, 3, 1))  # (T, B, D, H, W, C)
    params, state = learner.init(jax.random.PRNGKey(0), xs[0])
    outs, state = learner.unroll(params, state, None, xs)  # (5, 2, 3, 3, 3, 2)
  """

  def __init__(
      self,
      input_shape: Sequence[int],
      output_channels: int,
      kernel_shape: Union[int, Sequence[int]],
      name: Optional[str] = None,
  ):
    """Constructs the cell.

    Args:
      input_shape: spatial shape ``(D, H, W)`` of the inputs (no batch, no
        channels).
      output_channels: channels of the hidden state.
      kernel_shape: kernel size, an int or a sequence of 3.
      name: module name.

    Raises:
      ValueError: for non-positive sizes or an ``input_shape`` of the wrong
        length.
    """
    super().__init__(3, input_shape, output_channels, kernel_shape, name)


class Conv1DGRU(ConvNDGRU):
  """1-D convolutional GRU; see :class:`ConvNDGRU`.

  A step module with its memory in hidden state (``h``), not an
  ``hk.RNNCore``: no ``initial_state``, and ``learner.unroll`` takes the
  place of ``hk.dynamic_unroll``::

    model = hk.transform_with_state(lambda x: Conv1DGRU((6,), 2, 3)(x))
    learner = haiku_etp.bptt(model)  # or d_rtrl / es_d_rtrl
    xs = jnp.ones((5, 2, 6, 1))  # (T, B, W, C)
    params, state = learner.init(jax.random.PRNGKey(0), xs[0])
    outs, state = learner.unroll(params, state, None, xs)  # (5, 2, 6, 2)
  """

  def __init__(
      self,
      input_shape: Sequence[int],
      output_channels: int,
      kernel_shape: Union[int, Sequence[int]],
      w_i_init: Optional[hk.initializers.Initializer] = None,
      w_h_init: Optional[hk.initializers.Initializer] = None,
      b_init: Optional[hk.initializers.Initializer] = None,
      name: Optional[str] = None,
  ):
    """Constructs the cell.

    Args:
      input_shape: spatial shape ``(W,)`` of the inputs (no batch, no
        channels).
      output_channels: channels of the hidden state.
      kernel_shape: kernel size, an int or a sequence of one.
      w_i_init: input kernel initialiser (``VarianceScaling()`` by default).
      w_h_init: recurrent kernel initialiser (``VarianceScaling()``).
      b_init: bias initialiser (zeros).
      name: module name.

    Raises:
      ValueError: for non-positive sizes or an ``input_shape`` of the wrong
        length.
    """
    super().__init__(
        1,
        input_shape,
        output_channels,
        kernel_shape,
        w_i_init=w_i_init,
        w_h_init=w_h_init,
        b_init=b_init,
        name=name,
    )


class Conv2DGRU(ConvNDGRU):
  """2-D convolutional GRU; see :class:`ConvNDGRU`.

  A step module with its memory in hidden state (``h``), not an
  ``hk.RNNCore``: no ``initial_state``, and ``learner.unroll`` takes the
  place of ``hk.dynamic_unroll``::

    model = hk.transform_with_state(lambda x: Conv2DGRU((4, 4), 2, 3)(x))
    learner = haiku_etp.bptt(model)  # or d_rtrl / es_d_rtrl
    xs = jnp.ones((5, 2, 4, 4, 1))  # (T, B, H, W, C)
    params, state = learner.init(jax.random.PRNGKey(0), xs[0])
    outs, state = learner.unroll(params, state, None, xs)  # (5, 2, 4, 4, 2)
  """

  def __init__(
      self,
      input_shape: Sequence[int],
      output_channels: int,
      kernel_shape: Union[int, Sequence[int]],
      w_i_init: Optional[hk.initializers.Initializer] = None,
      w_h_init: Optional[hk.initializers.Initializer] = None,
      b_init: Optional[hk.initializers.Initializer] = None,
      name: Optional[str] = None,
  ):
    """Constructs the cell.

    Args:
      input_shape: spatial shape ``(H, W)`` of the inputs (no batch, no
        channels).
      output_channels: channels of the hidden state.
      kernel_shape: kernel size, an int or a sequence of 2.
      w_i_init: input kernel initialiser (``VarianceScaling()`` by default).
      w_h_init: recurrent kernel initialiser (``VarianceScaling()``).
      b_init: bias initialiser (zeros).
      name: module name.

    Raises:
      ValueError: for non-positive sizes or an ``input_shape`` of the wrong
        length.
    """
    super().__init__(
        2,
        input_shape,
        output_channels,
        kernel_shape,
        w_i_init=w_i_init,
        w_h_init=w_h_init,
        b_init=b_init,
        name=name,
    )


class Conv3DGRU(ConvNDGRU):
  """3-D convolutional GRU; see :class:`ConvNDGRU`.

  A step module with its memory in hidden state (``h``), not an
  ``hk.RNNCore``: no ``initial_state``, and ``learner.unroll`` takes the
  place of ``hk.dynamic_unroll``::

    cell = lambda x: Conv3DGRU((3, 3, 3), 2, 3)(x)
    model = hk.transform_with_state(cell)
    learner = haiku_etp.bptt(model)  # or d_rtrl / es_d_rtrl
    xs = jnp.ones((5, 2, 3, 3, 3, 1))  # (T, B, D, H, W, C)
    params, state = learner.init(jax.random.PRNGKey(0), xs[0])
    outs, state = learner.unroll(params, state, None, xs)  # (5, 2, 3, 3, 3, 2)
  """

  def __init__(
      self,
      input_shape: Sequence[int],
      output_channels: int,
      kernel_shape: Union[int, Sequence[int]],
      w_i_init: Optional[hk.initializers.Initializer] = None,
      w_h_init: Optional[hk.initializers.Initializer] = None,
      b_init: Optional[hk.initializers.Initializer] = None,
      name: Optional[str] = None,
  ):
    """Constructs the cell.

    Args:
      input_shape: spatial shape ``(D, H, W)`` of the inputs (no batch, no
        channels).
      output_channels: channels of the hidden state.
      kernel_shape: kernel size, an int or a sequence of 3.
      w_i_init: input kernel initialiser (``VarianceScaling()`` by default).
      w_h_init: recurrent kernel initialiser (``VarianceScaling()``).
      b_init: bias initialiser (zeros).
      name: module name.

    Raises:
      ValueError: for non-positive sizes or an ``input_shape`` of the wrong
        length.
    """
    super().__init__(
        3,
        input_shape,
        output_channels,
        kernel_shape,
        w_i_init=w_i_init,
        w_h_init=w_h_init,
        b_init=b_init,
        name=name,
    )
