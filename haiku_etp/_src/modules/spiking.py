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
r"""Spiking Haiku modules: synapses, (adaptive) LIF neurons and a readout.

Every module keeps its memory in hidden state (``haiku_etp`` learners trace
it) and steps once per call, so a model is a step function ``x_t -> out_t``
wrapped in ``hk.transform_with_state``. Inputs carry the batch as leading
axis; the neuron and synapse updates are elementwise, so any rank >= 1 works
(``(B, N)`` after a dense layer, ``(B, H, W, C)`` after a convolution).

Time constants and the step ``dt`` are either positive Python floats in one
shared time unit (the default ``dt = 1.0`` makes ``tau`` a number of steps)
or ``saiunit`` time quantities (``tau=20 * u.ms, dt=1 * u.ms``). They become
Python float decay factors :math:`\exp(-\Delta t / \tau)` in the constructor;
voltages and currents are plain dimensionless arrays. With ``train_tau=True``
the time constants are parameters instead, one per feature, routed through
:func:`haiku_etp.elementwise` so the transition stays per-position and
D-RTRL stays exact.
"""

import math
import numbers
from typing import Any, Callable, Optional

import haiku as hk
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import saiunit as u

from haiku_etp._src.core import checks
from haiku_etp._src.ops import dense as dense_lib
from haiku_etp._src.ops import elementwise as elementwise_lib
from haiku_etp._src.modules import layers
from haiku_etp._src.core import state as state_lib
from haiku_etp._src.modules import surrogate as surrogate_lib

_RESETS = ("soft", "hard")


def _describe(value: Any) -> str:
  if isinstance(value, u.Quantity):
    mantissa = np.asarray(value.mantissa)
    if mantissa.ndim == 0:
      return f"{float(mantissa)!r} {value.unit}"
  return repr(value)


def _as_quantity(value: Any) -> Any:
  # A bare unit (u.ms) reads as one of that unit.
  return 1 * value if isinstance(value, u.Unit) else value


def _is_real(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _time_value(value: Any, name: str, unit: Optional[u.Unit]) -> float:
  """``value`` as a positive finite float, in ``unit`` if it is a Quantity.

  Raises:
    ValueError: if ``value`` is not a real scalar (or a scalar time Quantity
      when ``unit`` is given), or is not positive and finite.
  """
  if unit is None:
    if not _is_real(value):
      raise ValueError(
          f"{name} must be a positive float or a saiunit time Quantity, got "
          f"{value!r}."
      )
    number = float(value)
  else:
    if u.get_dim(value) != u.second.dim:
      raise ValueError(
          f"{name} must be a time Quantity, got {_describe(value)}."
      )
    if np.ndim(value.mantissa) != 0:
      raise ValueError(
          f"{name} must be a scalar, got shape {np.shape(value.mantissa)}."
      )
    number = float(np.asarray(value.to_decimal(unit)))
  if not math.isfinite(number) or number <= 0:
    raise ValueError(f"{name} must be positive, got {_describe(value)}.")
  return number


def _check_time_pair(tau: Any, dt: Any, tau_name: str) -> tuple[float, float]:
  """Validates ``(tau, dt)``; returns both as floats in ``dt``'s unit.

  Raises:
    ValueError: if only one is a Quantity, either is not a time, or either
      is not positive and finite.
  """
  tau, dt = _as_quantity(tau), _as_quantity(dt)
  tau_q, dt_q = isinstance(tau, u.Quantity), isinstance(dt, u.Quantity)
  if tau_q != dt_q:
    raise ValueError(
        f"{tau_name} and dt must both be saiunit time Quantities or both be "
        f"floats, got {tau_name}={_describe(tau)} and dt={_describe(dt)}."
    )
  unit = dt.unit if dt_q else None
  dt_value = _time_value(dt, "dt", unit)
  return _time_value(tau, tau_name, unit), dt_value


def _decay(tau: Any, dt: Any, tau_name: str = "tau") -> float:
  """The per-step decay factor ``exp(-dt / tau)`` as a Python float.

  Both are converted to ``dt``'s unit first, so ``20 ms`` and ``0.02 s``
  give the same float as ``tau=20.0, dt=1.0``.
  """
  tau_value, dt_value = _check_time_pair(tau, dt, tau_name)
  return math.exp(-dt_value / tau_value)


def _decay_from_log_tau(log_tau: jax.Array) -> jax.Array:
  """``exp(-dt / tau)`` from ``log(tau / dt)``: positive ``tau`` always."""
  return jnp.exp(-jnp.exp(-log_tau))


def _leak(decay: float, train: bool, name: str, x: jax.Array) -> Any:
  """The decay factor, or a trained per-feature one through the ETP op.

  With ``train``, the parameter ``name`` holds ``log(tau / dt)`` per feature
  (the last axis of ``x``), initialised from ``decay``, and the factor goes
  through :func:`haiku_etp.elementwise` so the learners trace it.
  """
  if not train:
    return decay
  log_tau = hk.get_parameter(
      name,
      (x.shape[-1],),
      x.dtype,
      init=hk.initializers.Constant(math.log(-1.0 / math.log(decay))),
  )
  return elementwise_lib.elementwise(log_tau, _decay_from_log_tau)


def _refractory_steps(refractory: Any, dt: Any) -> int:
  """The refractory period as a number of steps.

  Raises:
    ValueError: if it is negative, neither an int nor a time Quantity, or a
      Quantity while ``dt`` is not.
  """
  refractory, dt = _as_quantity(refractory), _as_quantity(dt)
  if isinstance(refractory, u.Quantity):
    if not isinstance(dt, u.Quantity):
      raise ValueError(
          "A refractory period given as a Quantity needs dt as a time "
          f"Quantity too, got refractory={_describe(refractory)} and "
          f"dt={_describe(dt)}."
      )
    if u.get_dim(refractory) != u.second.dim:
      raise ValueError(
          f"refractory must be an int number of steps or a time Quantity, "
          f"got {_describe(refractory)}."
      )
    if np.ndim(refractory.mantissa) != 0:
      raise ValueError(
          "refractory must be a scalar, got shape "
          f"{np.shape(refractory.mantissa)}."
      )
    period = float(np.asarray(refractory.to_decimal(dt.unit)))
    if not math.isfinite(period) or period < 0:
      raise ValueError(f"refractory must be >= 0, got {_describe(refractory)}.")
    return int(round(period / _time_value(dt, "dt", dt.unit)))
  if isinstance(refractory, bool) or not isinstance(
      refractory, numbers.Integral
  ):
    raise ValueError(
        "refractory must be an int number of steps or a time Quantity, got "
        f"{refractory!r}."
    )
  if refractory < 0:
    raise ValueError(f"refractory must be >= 0, got {refractory}.")
  return int(refractory)


def _check_real(value: Any, name: str) -> float:
  if not _is_real(value) or not math.isfinite(value):
    raise ValueError(f"{name} must be a finite real number, got {value!r}.")
  return float(value)


def _elementwise_input(x: Any, module_name: str) -> jax.Array:
  """``x`` as a floating array of rank >= 1."""
  x = jnp.asarray(x)
  if x.ndim < 1:
    raise ValueError(
        f"Input to {module_name} must have rank >= 1, got shape {x.shape}."
    )
  if not jnp.issubdtype(x.dtype, jnp.floating):
    # Hidden state is floating; binary spike inputs arrive as bool or int.
    x = x.astype(jnp.result_type(float))
  return x


class ExponentialSynapse(hk.Module):
  r"""Exponential current synapse: a leaky sum of its input.

  .. math::
    i_t = \alpha\, i_{t-1} + x_t, \qquad \alpha = e^{-\Delta t / \tau}

  Hidden state: ``"i_syn"`` (shape and dtype of the input, zero at rest).
  Returns :math:`i_t`.

  Its state transition is per-position, so D-RTRL equals BPTT for a
  feed-forward layer (weights -> synapse -> neuron).

  >>> import haiku as hk, jax.numpy as jnp
  >>> model = hk.transform_with_state(lambda x: ExponentialSynapse()(x))
  >>> params, state = model.init(None, jnp.ones((2, 3)))
  >>> i, state = model.apply(params, state, None, jnp.ones((2, 3)))
  >>> i.shape, list(state["exponential_synapse"])
  ((2, 3), ['i_syn:hidden'])
  """

  def __init__(
      self,
      tau: Any = 5.0,
      dt: Any = 1.0,
      train_tau: bool = False,
      name: Optional[str] = None,
  ):
    """Constructs an ExponentialSynapse.

    Args:
      tau: synaptic time constant, a positive float in the unit of ``dt``
        or a saiunit time Quantity.
      dt: simulation step, a positive float or a saiunit time Quantity (a
        Quantity exactly when ``tau`` is one).
      train_tau: learn the time constants, one per feature (the last input
        axis): parameters ``log_tau`` (and ``log_tau_adapt`` for ALIF) hold
        ``log(tau / dt)``, start from the given values and reach the state
        through :func:`haiku_etp.elementwise`, so every learner traces them.
      name: module name.

    Raises:
      ValueError: for a non-positive ``tau`` or ``dt``, or mixed or
        incompatible units.
    """
    super().__init__(name=name)
    self.alpha = _decay(tau, dt)
    self.train_tau = bool(train_tau)

  def __call__(self, x_t: Any) -> jax.Array:
    """Advances the synapse by one step.

    Args:
      x_t: input current of rank >= 1 (batch first).

    Returns:
      The synaptic current :math:`i_t`, shaped like ``x_t``.

    Raises:
      ValueError: if ``x_t`` has rank 0.
    """
    x_t = _elementwise_input(x_t, "ExponentialSynapse")
    i_tm1 = state_lib.get_hidden_state("i_syn", x_t.shape, x_t.dtype)
    alpha = _leak(self.alpha, self.train_tau, "log_tau", x_t)
    i_t = alpha * i_tm1 + x_t
    state_lib.set_hidden_state("i_syn", i_t)
    return i_t


class LIF(hk.Module):
  r"""Leaky integrate-and-fire neuron with surrogate-gradient spikes.

  .. math::
    u_t &= \beta\, v_{t-1} + i_t, \qquad \beta = e^{-\Delta t / \tau} \\
    s_t &= \mathrm{surrogate}(u_t - \vartheta) \\
    v_t &= u_t - (\vartheta - v_\mathrm{reset})\, s_t
      \quad \text{(soft reset)} \\
    v_t &= u_t + (v_\mathrm{reset} - u_t)\, s_t \quad \text{(hard reset)}

  With a refractory period of :math:`n > 0` steps, a neuron that spiked is
  frozen for the next :math:`n` steps: its counter :math:`c` gates the
  update,

  .. math::
    a_t = [c_{t-1} = 0], \quad
    u_t = a_t (\beta v_{t-1} + i_t) + (1 - a_t) v_{t-1}, \quad
    s_t = a_t\, \mathrm{surrogate}(u_t - \vartheta), \\
    c_t = n \text{ if } s_t > 0 \text{ else } \max(c_{t-1} - 1, 0).

  Hidden state: ``"v"`` (membrane potential, resting at zero); with a
  refractory period also the per-sample int32 state ``"refractory"`` (the
  counter, carried but not traced, declared with
  :func:`haiku_etp.get_sample_state`). Returns the spikes :math:`s_t`.

  Its state transition is per-position, so D-RTRL equals BPTT for a
  feed-forward layer (weights -> synapse -> neuron).

  >>> import haiku as hk, jax.numpy as jnp
  >>> model = hk.transform_with_state(lambda i: LIF(tau=10.0)(i))
  >>> params, state = model.init(None, jnp.ones((2, 3)))
  >>> s, state = model.apply(params, state, None, jnp.full((2, 3), 2.0))
  >>> s.tolist()
  [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
  >>> state["lif"]["v:hidden"].tolist()
  [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
  """

  def __init__(
      self,
      tau: Any = 20.0,
      dt: Any = 1.0,
      threshold: float = 1.0,
      v_reset: float = 0.0,
      reset: str = "soft",
      refractory: Any = 0,
      surrogate: Callable[[jax.Array], jax.Array] = (
          surrogate_lib.fast_sigmoid
      ),
      detach_reset: bool = False,
      train_tau: bool = False,
      name: Optional[str] = None,
  ):
    r"""Constructs a LIF neuron.

    Args:
      tau: membrane time constant, a positive float in the unit of ``dt``
        or a saiunit time Quantity.
      dt: simulation step, a positive float or a saiunit time Quantity (a
        Quantity exactly when ``tau`` is one).
      threshold: firing threshold :math:`\vartheta`.
      v_reset: reset potential, below ``threshold``.
      reset: ``"soft"`` (subtract ``threshold - v_reset``) or ``"hard"``
        (set to ``v_reset``).
      refractory: refractory period, an int number of steps >= 0 or a
        saiunit time Quantity (rounded to whole steps; needs ``dt`` as a
        Quantity).
      surrogate: spike function ``x -> spikes`` with a surrogate derivative,
        e.g. ``functools.partial(surrogate.triangle, scale=2.0)``.
      detach_reset: stop the gradient through the spikes in the reset term
        (the forward pass is unchanged).
      train_tau: learn the time constants, one per feature (the last input
        axis): parameters ``log_tau`` (and ``log_tau_adapt`` for ALIF) hold
        ``log(tau / dt)``, start from the given values and reach the state
        through :func:`haiku_etp.elementwise`, so every learner traces them.
      name: module name.

    Raises:
      ValueError: for a bad time constant, ``threshold <= v_reset``, an
        unknown ``reset``, a negative ``refractory`` or a non-callable
        ``surrogate``.
    """
    super().__init__(name=name)
    self.beta = _decay(tau, dt)
    self.threshold = _check_real(threshold, "threshold")
    self.v_reset = _check_real(v_reset, "v_reset")
    if self.threshold <= self.v_reset:
      raise ValueError(
          f"threshold must be above v_reset, got threshold={threshold!r} and "
          f"v_reset={v_reset!r}."
      )
    if reset not in _RESETS:
      raise ValueError(f"reset must be 'soft' or 'hard', got {reset!r}.")
    self.reset = reset
    self.refractory = _refractory_steps(refractory, dt)
    if not callable(surrogate):
      raise ValueError(
          f"surrogate must be a callable x -> spikes, got {surrogate!r}."
      )
    self.surrogate = surrogate
    self.detach_reset = bool(detach_reset)
    self.train_tau = bool(train_tau)

  def __call__(self, i_t: Any) -> jax.Array:
    """Advances the neuron by one step.

    Args:
      i_t: input current of rank >= 1 (batch first).

    Returns:
      The spikes :math:`s_t` (0 or 1), shaped like ``i_t``.

    Raises:
      ValueError: if ``i_t`` has rank 0.
    """
    i_t = _elementwise_input(i_t, type(self).__name__)
    return self._fire(i_t, self.threshold)

  def _fire(self, i_t: jax.Array, theta_t: Any) -> jax.Array:
    """Integrates ``i_t``, spikes above ``theta_t`` and resets ``v``."""
    v_tm1 = state_lib.get_hidden_state("v", i_t.shape, i_t.dtype)
    beta = _leak(self.beta, self.train_tau, "log_tau", i_t)
    u_t = beta * v_tm1 + i_t
    if self.refractory:
      c_tm1 = state_lib.get_sample_state("refractory", i_t.shape, jnp.int32)
      active = c_tm1 == 0
      u_t = jnp.where(active, u_t, v_tm1)
      s_t = self.surrogate(u_t - theta_t) * active.astype(i_t.dtype)
      c_t = jnp.where(s_t > 0, self.refractory, jnp.maximum(c_tm1 - 1, 0))
      state_lib.set_sample_state("refractory", c_t.astype(jnp.int32))
    else:
      s_t = self.surrogate(u_t - theta_t)
    s_reset = lax.stop_gradient(s_t) if self.detach_reset else s_t
    if self.reset == "soft":
      v_t = u_t - (self.threshold - self.v_reset) * s_reset
    else:
      v_t = u_t + (self.v_reset - u_t) * s_reset
    state_lib.set_hidden_state("v", v_t)
    return s_t


class ALIF(LIF):
  r"""Adaptive LIF: each spike raises the neuron's threshold for a while.

  .. math::
    \vartheta_t &= \vartheta + \beta_a\, a_{t-1} \\
    u_t &= \beta\, v_{t-1} + i_t, \qquad \beta = e^{-\Delta t / \tau} \\
    s_t &= \mathrm{surrogate}(u_t - \vartheta_t) \\
    a_t &= \rho\, a_{t-1} + s_t, \qquad \rho = e^{-\Delta t / \tau_a}

  and :math:`v_t` resets as in :class:`LIF` (a soft reset subtracts the base
  :math:`\vartheta - v_\mathrm{reset}`); the refractory option is the
  same.

  Hidden state: ``"v"`` (membrane potential) and ``"a"`` (adaptation
  variable), both zero at rest; with a refractory period also the
  per-sample int32 state ``"refractory"``. Returns the spikes :math:`s_t`.

  Its state transition is per-position, so D-RTRL equals BPTT for a
  feed-forward layer (weights -> synapse -> neuron).

  >>> import haiku as hk, jax.numpy as jnp
  >>> model = hk.transform_with_state(lambda i: ALIF(beta_adapt=0.5)(i))
  >>> params, state = model.init(None, jnp.ones((2, 3)))
  >>> s, state = model.apply(params, state, None, jnp.full((2, 3), 2.0))
  >>> sorted(state["alif"]), state["alif"]["a:hidden"].shape
  (['a:hidden', 'v:hidden'], (2, 3))
  """

  def __init__(
      self,
      tau: Any = 20.0,
      tau_adapt: Any = 200.0,
      beta_adapt: float = 0.05,
      dt: Any = 1.0,
      threshold: float = 1.0,
      v_reset: float = 0.0,
      reset: str = "soft",
      refractory: Any = 0,
      surrogate: Callable[[jax.Array], jax.Array] = (
          surrogate_lib.fast_sigmoid
      ),
      detach_reset: bool = False,
      train_tau: bool = False,
      name: Optional[str] = None,
  ):
    r"""Constructs an ALIF neuron.

    Args:
      tau: membrane time constant, a positive float in the unit of ``dt``
        or a saiunit time Quantity.
      tau_adapt: adaptation time constant, in the same form as ``tau``.
      beta_adapt: threshold increase per unit of adaptation, >= 0.
      dt: simulation step, a positive float or a saiunit time Quantity.
      threshold: base firing threshold :math:`\vartheta`.
      v_reset: reset potential, below ``threshold``.
      reset: ``"soft"`` or ``"hard"``, as in :class:`LIF`.
      refractory: refractory period, as in :class:`LIF`.
      surrogate: spike function ``x -> spikes``, as in :class:`LIF`.
      detach_reset: stop the gradient through the spikes in the reset term.
      train_tau: learn the time constants, one per feature (the last input
        axis): parameters ``log_tau`` (and ``log_tau_adapt`` for ALIF) hold
        ``log(tau / dt)``, start from the given values and reach the state
        through :func:`haiku_etp.elementwise`, so every learner traces them.
      name: module name.

    Raises:
      ValueError: for the bad values :class:`LIF` rejects, a bad
        ``tau_adapt`` or a negative ``beta_adapt``.
    """
    super().__init__(
        tau=tau,
        dt=dt,
        threshold=threshold,
        v_reset=v_reset,
        reset=reset,
        refractory=refractory,
        surrogate=surrogate,
        detach_reset=detach_reset,
        train_tau=train_tau,
        name=name,
    )
    self.rho = _decay(tau_adapt, dt, "tau_adapt")
    self.beta_adapt = _check_real(beta_adapt, "beta_adapt")
    if self.beta_adapt < 0:
      raise ValueError(f"beta_adapt must be >= 0, got {beta_adapt!r}.")

  def __call__(self, i_t: Any) -> jax.Array:
    """Advances the neuron by one step.

    Args:
      i_t: input current of rank >= 1 (batch first).

    Returns:
      The spikes :math:`s_t` (0 or 1), shaped like ``i_t``.

    Raises:
      ValueError: if ``i_t`` has rank 0.
    """
    i_t = _elementwise_input(i_t, type(self).__name__)
    a_tm1 = state_lib.get_hidden_state("a", i_t.shape, i_t.dtype)
    s_t = self._fire(i_t, self.threshold + self.beta_adapt * a_tm1)
    rho = _leak(self.rho, self.train_tau, "log_tau_adapt", i_t)
    state_lib.set_hidden_state("a", rho * a_tm1 + s_t)
    return s_t


class _Recurrence(hk.Module):
  """Previous spikes fed back through a recurrent weight (e-prop's networks).

  The spikes of the last step are kept in hidden state ``"s"`` and enter the
  current through :func:`haiku_etp.dense` with the parameter ``w_rec``
  (``(N, N)``, fan-in initialised; without self-connections unless
  ``autapses``). The recurrent weight mixes positions, so D-RTRL and
  ES-D-RTRL are approximate on it: the compiler says so, and D-RTRL then
  gives e-prop's eligibility traces (the exact per-neuron traces with the
  recurrent path cut).

  A Haiku module itself, so that its step runs in the neuron module's name
  scope (``w_rec`` lives beside the neurons' parameters).
  """

  def __init__(
      self,
      *args: Any,
      w_rec_init: Optional[hk.initializers.Initializer] = None,
      autapses: bool = False,
      **kwargs: Any,
  ):
    super().__init__(*args, **kwargs)
    self.w_rec_init = w_rec_init
    self.autapses = bool(autapses)

  def __call__(self, i_t: Any) -> jax.Array:
    """Advances the neurons by one step; returns the spikes ``(B, N)``."""
    i_t = _elementwise_input(i_t, type(self).__name__)
    # A mixin: LIF's or ALIF's __call__ follows it in the MRO.
    s_t = super().__call__(self._recurrent_current(i_t))  # type: ignore[misc]
    state_lib.set_hidden_state("s", s_t)
    return s_t

  def _recurrent_current(self, i_t: jax.Array) -> jax.Array:
    checks.assert_rank(
        i_t,
        2,
        custom_message=(
            f"Input to {type(self).__name__} must have rank 2 (batch, neurons), "
            f"got shape {tuple(i_t.shape)}."
        ),
    )
    n = i_t.shape[-1]
    w_init = self.w_rec_init or layers.fan_in_init(n)
    w_rec = hk.get_parameter("w_rec", (n, n), i_t.dtype, init=w_init)
    if not self.autapses:
      w_rec = w_rec * (1.0 - jnp.eye(n, dtype=i_t.dtype))
    s_tm1 = state_lib.get_hidden_state("s", i_t.shape, i_t.dtype)
    return i_t + dense_lib.dense(s_tm1, w_rec)


class RecurrentLIF(_Recurrence, LIF):
  """:class:`LIF` neurons with recurrent connections, ``i + s_{t-1} W_rec``.

  Takes the arguments of :class:`LIF` and ``w_rec_init`` (default: truncated
  normal scaled by fan-in) and ``autapses`` (default ``False``: the diagonal
  of ``W_rec`` is held at zero). Hidden state: ``"v"`` and the last spikes
  ``"s"``. Inputs are ``(batch, neurons)``.

  >>> import haiku as hk, jax, jax.numpy as jnp
  >>> model = hk.transform_with_state(lambda i: RecurrentLIF(tau=10.0)(i))
  >>> params, state = model.init(jax.random.PRNGKey(0), jnp.ones((2, 3)))
  >>> params["recurrent_lif"]["w_rec"].shape
  (3, 3)
  """


class RecurrentALIF(_Recurrence, ALIF):
  """:class:`ALIF` neurons with recurrent connections (e-prop's LSNN).

  Takes the arguments of :class:`ALIF` and ``w_rec_init`` and ``autapses``
  as :class:`RecurrentLIF`. Hidden state: ``"v"``, ``"a"`` and the last
  spikes ``"s"``. With a :class:`LeakyReadout` on top it is the network of
  Bellec et al. (2020); D-RTRL on it gives e-prop's eligibility traces plus
  the exact credit of the readout's leak.
  """


class LeakyReadout(hk.Module):
  r"""Leaky integrator readout with its own affine weights.

  .. math::
    y_t = x_t W + b, \qquad r_t = \kappa\, r_{t-1} + y_t, \qquad
    \kappa = e^{-\Delta t / \tau}

  Parameters: ``"w"`` of shape ``(I, output_size)`` and ``"b"`` of shape
  ``(output_size,)`` (unless ``with_bias=False``), applied through
  :func:`haiku_etp.dense` so the learners trace them. Hidden state: ``"r"``
  (zero at rest). Returns :math:`r_t`.

  Its state transition is per-position, so D-RTRL equals BPTT for a
  feed-forward layer (weights -> synapse -> neuron); its leak is uniform, so
  ES-D-RTRL with decay :math:`(\kappa, 0)` equals BPTT too.

  >>> import haiku as hk, jax, jax.numpy as jnp
  >>> model = hk.transform_with_state(lambda x: LeakyReadout(2)(x))
  >>> params, state = model.init(jax.random.PRNGKey(0), jnp.ones((4, 3)))
  >>> r, state = model.apply(params, state, None, jnp.ones((4, 3)))
  >>> r.shape, params["leaky_readout"]["w"].shape
  ((4, 2), (3, 2))
  """

  def __init__(
      self,
      output_size: int,
      tau: Any = 20.0,
      dt: Any = 1.0,
      with_bias: bool = True,
      w_init: Optional[hk.initializers.Initializer] = None,
      b_init: Optional[hk.initializers.Initializer] = None,
      train_tau: bool = False,
      name: Optional[str] = None,
  ):
    """Constructs a LeakyReadout.

    Args:
      output_size: number of outputs, > 0.
      tau: readout time constant, a positive float in the unit of ``dt`` or
        a saiunit time Quantity.
      dt: simulation step, a positive float or a saiunit time Quantity.
      with_bias: whether to add a bias.
      w_init: weight initialiser; truncated normal with standard deviation
        ``1 / sqrt(I)`` by default.
      b_init: bias initialiser; zeros by default.
      train_tau: learn the time constants, one per feature (the last input
        axis): parameters ``log_tau`` (and ``log_tau_adapt`` for ALIF) hold
        ``log(tau / dt)``, start from the given values and reach the state
        through :func:`haiku_etp.elementwise`, so every learner traces them.
      name: module name.

    Raises:
      ValueError: for a non-positive ``output_size`` or a bad time constant.
    """
    super().__init__(name=name)
    self.output_size = layers.check_positive(output_size, "output_size")
    self.kappa = _decay(tau, dt)
    self.train_tau = bool(train_tau)
    self.with_bias = with_bias
    self.w_init = w_init
    self.b_init = b_init or jnp.zeros

  def __call__(self, x_t: Any) -> jax.Array:
    """Advances the readout by one step.

    Args:
      x_t: input of shape ``(I,)`` or ``(B, I)``.

    Returns:
      :math:`r_t` of shape ``(output_size,)`` or ``(B, output_size)``.

    Raises:
      ValueError: if ``x_t`` does not have rank 1 or 2.
    """
    x_t = jnp.asarray(x_t)
    checks.assert_rank(
        x_t,
        {1, 2},
        custom_message=(
            f"Input to LeakyReadout must have rank 1 or 2, got shape {x_t.shape}."
        ),
    )
    if not jnp.issubdtype(x_t.dtype, jnp.floating):
      x_t = x_t.astype(jnp.result_type(float))
    dtype = x_t.dtype
    input_size = x_t.shape[-1]
    w_init = self.w_init or layers.fan_in_init(input_size)
    w = hk.get_parameter("w", (input_size, self.output_size), dtype, w_init)
    b = None
    if self.with_bias:
      b = hk.get_parameter("b", (self.output_size,), dtype, self.b_init)
    y_t = dense_lib.dense(x_t, w, b)
    r_tm1 = state_lib.get_hidden_state("r", y_t.shape, dtype)
    kappa = _leak(self.kappa, self.train_tau, "log_tau", y_t)
    r_t = kappa * r_tm1 + y_t
    state_lib.set_hidden_state("r", r_t)
    return r_t
