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
r"""Recurrent layers whose transition is per unit: D-RTRL is exact on them.

D-RTRL keeps one trace per parameter and unit and is exact when each hidden
unit's new state depends on its own old state alone (``docs/design.md``,
"When each learner equals BPTT"). These layers are built that way, for long
sequences:

* :class:`LRU`: the linear recurrent unit of Orvieto et al. (2023), a complex
  diagonal recurrence held as real and imaginary parts (two states per unit,
  one hidden group);
* :class:`MinGRU` and :class:`MinLSTM` (Feng et al., 2024): gates and
  candidate computed from the input alone.

The element-wise GRU and LSTM (per-unit recurrent weights, Irie et al. 2023)
are :class:`~haiku_etp.GRU` and :class:`~haiku_etp.LSTM` with
``recurrence="elementwise"``. Stacks of these layers (through ETP ops and
elementwise functions) stay exact with cross-group traces within the
learner's ``max_cross_bytes``.
"""

import math
from typing import Any, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from haiku_etp._src.ops import elementwise as elementwise_lib
from haiku_etp._src.modules import layers
from haiku_etp._src.modules import recurrent
from haiku_etp._src.core import state as state_lib


def _input(cell: str, x_t: Any) -> jax.Array:
  """``x_t`` of rank 1 or 2, cast to the default float dtype if integer or
  boolean (spikes), so the state and parameters take a float dtype."""
  x_t = jnp.asarray(x_t)
  recurrent.check_rank(cell, x_t, (1, 2))
  if not jnp.issubdtype(x_t.dtype, jnp.floating):
    x_t = x_t.astype(jnp.result_type(float))
  return x_t


def _number(value: Any, name: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f"{name} must be a number, got {value!r}.")
  return float(value)


def _nu_init(r_min: float, r_max: float) -> hk.initializers.Initializer:
  """``nu_log`` with ``|lambda| = exp(-exp(nu_log))`` uniform on the ring
  ``r_min <= |lambda| <= r_max`` (uniform in area, as Orvieto et al.)."""

  def init(shape: Sequence[int], dtype: jax.typing.DTypeLike) -> jax.Array:
    u = jax.random.uniform(hk.next_rng_key(), shape)
    nu = -0.5 * jnp.log(u * (r_max**2 - r_min**2) + r_min**2)
    return jnp.log(nu).astype(dtype)

  return init


def _theta_init(max_phase: float) -> hk.initializers.Initializer:
  def init(shape: Sequence[int], dtype: jax.typing.DTypeLike) -> jax.Array:
    u = jax.random.uniform(hk.next_rng_key(), shape)
    return jnp.log(max_phase * u).astype(dtype)

  return init


def _magnitude(nu_log: jax.Array) -> jax.Array:
  return jnp.exp(-jnp.exp(nu_log))


class LRU(hk.Module):
  r"""Linear recurrent unit (Orvieto et al., 2023) with hidden state ``h``.

  .. math::
    \lambda &= \exp(-e^{\nu} + i e^{\theta}) \\
    h_t &= \lambda \odot h_{t-1} + e^{\gamma} \odot (B x_t) \\
    y_t &= \operatorname{Re}(C h_t) + d \odot x_t

  with a complex diagonal ``lambda`` of ``hidden_size`` entries whose radii
  are drawn uniformly on the ring ``[r_min, r_max]`` and phases in
  ``[0, max_phase]``, ``gamma`` initialised to the normalisation
  ``log sqrt(1 - |lambda|^2)``, complex ``B`` and ``C`` with Glorot-like
  normal entries, and a skip ``d`` (when ``output_size`` equals the input
  size). Parameters ``nu_log``, ``theta_log``, ``gamma_log`` ``(N,)``,
  ``b_re``/``b_im`` ``(I, N)``, ``c_re``/``c_im`` ``(N, O)`` and ``d``
  ``(I,)``.

  The complex state is held as its real and imaginary parts, hidden states
  ``h_re`` and ``h_im`` of shape ``(B, N)``: one hidden group with two states
  per unit, whose transition is the 2x2 rotation-and-decay block of
  ``lambda``. D-RTRL is exact on the layer; its trace of ``B`` is
  ``(B, I, N, 2)`` for each of ``b_re`` and ``b_im``.

  A step module with its memory in hidden state:

  >>> import haiku as hk, jax, jax.numpy as jnp, haiku_etp
  >>> model = hk.transform_with_state(lambda x: LRU(8)(x))
  >>> learner = haiku_etp.d_rtrl(model)  # exact on the LRU
  >>> xs = jnp.ones((5, 2, 3))  # (T, B, I)
  >>> params, state = learner.init(jax.random.PRNGKey(0), xs[0])
  >>> sorted(state["lru"])
  ['h_im:hidden', 'h_re:hidden']
  >>> outs, state = learner.unroll(params, state, None, xs)
  >>> outs.shape  # output_size defaults to the input size
  (5, 2, 3)
  """

  def __init__(
      self,
      hidden_size: int,
      output_size: Optional[int] = None,
      r_min: float = 0.0,
      r_max: float = 1.0,
      max_phase: float = 2 * math.pi,
      name: Optional[str] = None,
  ):
    """Constructs the layer.

    Args:
      hidden_size: number ``N`` of complex units.
      output_size: output features ``O``; the input size by default. The
        skip ``d * x`` exists only when ``O`` equals the input size.
      r_min: smallest radius of ``lambda`` at initialisation, in ``[0, 1)``.
      r_max: largest radius, in ``(r_min, 1)`` (values up to 1 are clipped
        to stay below 1; Orvieto et al. use 0.9-0.999 for long sequences).
      max_phase: largest phase of ``lambda`` at initialisation, ``> 0``
        (``2 pi`` covers the circle; small values favour slow modes).
      name: module name.

    Raises:
      ValueError: for a non-positive size or radii outside
        ``0 <= r_min < r_max <= 1``.
    """
    super().__init__(name=name)
    self.hidden_size = layers.check_positive(hidden_size, "hidden_size")
    self.output_size = (
        None
        if output_size is None
        else layers.check_positive(output_size, "output_size")
    )
    r_min = _number(r_min, "r_min")
    r_max = _number(r_max, "r_max")
    if not 0.0 <= r_min < r_max <= 1.0:
      raise ValueError(
          f"LRU radii need 0 <= r_min < r_max <= 1, got r_min={r_min}, "
          f"r_max={r_max}."
      )
    max_phase = _number(max_phase, "max_phase")
    if max_phase <= 0:
      raise ValueError(f"max_phase must be > 0, got {max_phase}.")
    # A radius of exactly 1 would make nu_log = log(0).
    self.r_min, self.r_max = r_min, min(r_max, 1.0 - 1e-6)
    self.max_phase = max_phase

  def __call__(self, x_t: jax.Array) -> jax.Array:
    """One step: ``(B, I)`` or ``(I,)`` inputs to ``y_t`` ``(..., O)``."""
    x_t = _input("LRU", x_t)
    dtype = x_t.dtype
    n, i = self.hidden_size, x_t.shape[-1]
    o = i if self.output_size is None else self.output_size
    shape = x_t.shape[:-1] + (n,)
    re_tm1 = recurrent.hidden("LRU", "h_re", shape, dtype)
    im_tm1 = recurrent.hidden("LRU", "h_im", shape, dtype)
    nu_log = hk.get_parameter(
        "nu_log", (n,), dtype, init=_nu_init(self.r_min, self.r_max)
    )
    theta_log = hk.get_parameter(
        "theta_log", (n,), dtype, init=_theta_init(self.max_phase)
    )

    def gamma_init(
        shape: Sequence[int], dtype: jax.typing.DTypeLike
    ) -> jax.Array:
      del shape
      radius = _magnitude(nu_log)
      return (0.5 * jnp.log1p(-(radius**2))).astype(dtype)

    gamma_log = hk.get_parameter("gamma_log", (n,), dtype, init=gamma_init)
    radius = elementwise_lib.elementwise(nu_log, _magnitude)
    phase = elementwise_lib.elementwise(theta_log, jnp.exp)
    gamma = elementwise_lib.elementwise(gamma_log, jnp.exp)
    a, b = radius * jnp.cos(phase), radius * jnp.sin(phase)
    b_init = hk.initializers.RandomNormal(1.0 / math.sqrt(2 * i))
    u_re = layers.Linear(n, with_bias=False, w_init=b_init, name="b_re")(x_t)
    u_im = layers.Linear(n, with_bias=False, w_init=b_init, name="b_im")(x_t)
    re_t = a * re_tm1 - b * im_tm1 + gamma * u_re
    im_t = b * re_tm1 + a * im_tm1 + gamma * u_im
    state_lib.set_hidden_state("h_re", re_t)
    state_lib.set_hidden_state("h_im", im_t)
    c_init = hk.initializers.RandomNormal(1.0 / math.sqrt(n))
    y_t = layers.Linear(o, with_bias=False, w_init=c_init, name="c_re")(re_t)
    y_t = y_t - layers.Linear(o, with_bias=False, w_init=c_init, name="c_im")(
        im_t
    )
    if o == i:
      d = hk.get_parameter(
          "d", (i,), dtype, init=hk.initializers.RandomNormal(1.0)
      )
      y_t = y_t + elementwise_lib.elementwise(d) * x_t
    return y_t


class _MinCell(hk.Module):
  """The minimal cells' constructor."""

  def __init__(self, hidden_size: int, name: Optional[str] = None):
    """Constructs the cell.

    Args:
      hidden_size: number of hidden units.
      name: module name.

    Raises:
      ValueError: if ``hidden_size`` is not a positive int.
    """
    super().__init__(name=name)
    self.hidden_size = layers.check_positive(hidden_size, "hidden_size")


class MinGRU(_MinCell):
  r"""Minimal GRU (Feng et al., 2024) with hidden state ``h``.

  .. math::
    z_t &= \sigma(W_z x_t + b_z) \\
    \tilde h_t &= W_h x_t + b_h \\
    h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

  The gate and the candidate read the input only, so the transition
  ``1 - z_t`` is per unit and D-RTRL is exact. Parameters are two
  :class:`~haiku_etp.Linear` layers, ``gate`` and ``candidate``.

  >>> import haiku as hk, jax, jax.numpy as jnp, haiku_etp
  >>> model = hk.transform_with_state(lambda x: MinGRU(4)(x))
  >>> learner = haiku_etp.d_rtrl(model)
  >>> xs = jnp.ones((5, 2, 3))
  >>> params, state = learner.init(jax.random.PRNGKey(0), xs[0])
  >>> learner.unroll(params, state, None, xs)[0].shape
  (5, 2, 4)
  """

  def __call__(self, x_t: jax.Array) -> jax.Array:
    """One step: ``(B, I)`` or ``(I,)`` inputs to ``h_t``."""
    x_t = _input("MinGRU", x_t)
    shape = x_t.shape[:-1] + (self.hidden_size,)
    h_tm1 = recurrent.hidden("MinGRU", "h", shape, x_t.dtype)
    z = jax.nn.sigmoid(layers.Linear(self.hidden_size, name="gate")(x_t))
    candidate = layers.Linear(self.hidden_size, name="candidate")(x_t)
    h_t = (1.0 - z) * h_tm1 + z * candidate
    state_lib.set_hidden_state("h", h_t)
    return h_t


class MinLSTM(_MinCell):
  r"""Minimal LSTM (Feng et al., 2024) with hidden state ``h``.

  .. math::
    f_t &= \sigma(W_f x_t + b_f), \quad i_t = \sigma(W_i x_t + b_i) \\
    \tilde h_t &= W_h x_t + b_h \\
    h_t &= \frac{f_t}{f_t + i_t} \odot h_{t-1}
           + \frac{i_t}{f_t + i_t} \odot \tilde h_t

  Gates and candidate read the input only (the normalised gates make the
  state a convex combination); D-RTRL is exact. Parameters are three
  :class:`~haiku_etp.Linear` layers, ``forget``, ``input`` and
  ``candidate``.

  >>> import haiku as hk, jax, jax.numpy as jnp, haiku_etp
  >>> model = hk.transform_with_state(lambda x: MinLSTM(4)(x))
  >>> learner = haiku_etp.d_rtrl(model)
  >>> xs = jnp.ones((5, 2, 3))
  >>> params, state = learner.init(jax.random.PRNGKey(0), xs[0])
  >>> learner.unroll(params, state, None, xs)[0].shape
  (5, 2, 4)
  """

  def __call__(self, x_t: jax.Array) -> jax.Array:
    """One step: ``(B, I)`` or ``(I,)`` inputs to ``h_t``."""
    x_t = _input("MinLSTM", x_t)
    size = self.hidden_size
    h_tm1 = recurrent.hidden(
        "MinLSTM", "h", x_t.shape[:-1] + (size,), x_t.dtype
    )
    f = jax.nn.sigmoid(layers.Linear(size, name="forget")(x_t))
    i = jax.nn.sigmoid(layers.Linear(size, name="input")(x_t))
    candidate = layers.Linear(size, name="candidate")(x_t)
    total = f + i
    h_t = (f / total) * h_tm1 + (i / total) * candidate
    state_lib.set_hidden_state("h", h_t)
    return h_t
