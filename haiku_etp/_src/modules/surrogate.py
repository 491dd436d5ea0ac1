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
"""Surrogate spike functions: a Heaviside step with a smooth derivative.

Each function returns ``1`` where its input is positive and ``0`` elsewhere
(``x = 0`` gives ``0``), in the input's dtype. Its derivative, as seen by
``jax.grad``, ``jax.jvp`` and the learners' forward-mode Jacobians, is a
bump of width about ``1 / scale`` around zero instead of a Dirac
delta. ``scale`` is a static Python float; bind it with
``functools.partial(triangle, scale=2.0)`` to get a spike function for the
``surrogate`` argument of the spiking neurons.
"""

import functools
import math
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp


def _heaviside(x: jax.Array) -> jax.Array:
  return (x > 0).astype(x.dtype)


def _with_derivative(
    derivative: Callable[[jax.Array, float], jax.Array],
) -> Callable[[jax.Array, float], jax.Array]:
  """A Heaviside step whose JVP multiplies tangents by ``derivative``."""

  # scale stays a Python float (non-differentiable and static), so one
  # function object serves every scale under jit, vmap and grad.
  @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
  def spike(x: jax.Array, scale: float) -> jax.Array:
    del scale
    return _heaviside(x)

  @spike.defjvp
  def _spike_jvp(
      scale: float, primals: tuple[jax.Array], tangents: tuple[jax.Array]
  ) -> tuple[jax.Array, jax.Array]:
    (x,), (x_dot,) = primals, tangents
    return _heaviside(x), derivative(x, scale) * x_dot

  return spike


def _check_scale(scale: Any, fn_name: str) -> float:
  if (
      isinstance(scale, bool)
      or not isinstance(scale, numbers.Real)
      or not math.isfinite(scale)
      or scale <= 0
  ):
    raise ValueError(
        f"scale of {fn_name} must be a positive finite real number, got "
        f"{scale!r}."
    )
  return float(scale)


def _sigmoid_derivative(x: jax.Array, scale: float) -> jax.Array:
  # sigma(z) (1 - sigma(z)) == sigma(z) sigma(-z); the second form avoids the
  # cancellation in 1 - sigma(z) and keeps full relative precision in the
  # right tail.
  z = scale * x
  return scale * jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)


def _fast_sigmoid_derivative(x: jax.Array, scale: float) -> jax.Array:
  return 1 / (1 + scale * jnp.abs(x)) ** 2


def _triangle_derivative(x: jax.Array, scale: float) -> jax.Array:
  return scale * jnp.maximum(0, 1 - scale * jnp.abs(x))


_sigmoid_spike = _with_derivative(_sigmoid_derivative)
_fast_sigmoid_spike = _with_derivative(_fast_sigmoid_derivative)
_triangle_spike = _with_derivative(_triangle_derivative)


def sigmoid(x: Any, scale: float = 4.0) -> jax.Array:
  r"""Heaviside step with the derivative of a logistic sigmoid.

  .. math::
    \frac{\partial s}{\partial x} = k\, \sigma(k x)\, (1 - \sigma(k x))

  with :math:`k` = ``scale``; its peak is :math:`k / 4` at :math:`x = 0`.

  Args:
    x: pre-spike input, e.g. ``v - threshold``.
    scale: steepness :math:`k > 0`, a Python float.

  Returns:
    ``(x > 0)`` in ``x``'s dtype.

  Raises:
    ValueError: if ``scale`` is not a positive finite real number.

  >>> import jax, jax.numpy as jnp
  >>> sigmoid(jnp.array([-1.0, 0.0, 2.0])).tolist()
  [0.0, 0.0, 1.0]
  >>> float(jax.grad(sigmoid)(0.0))
  1.0
  """
  return _sigmoid_spike(jnp.asarray(x), _check_scale(scale, "sigmoid"))


def fast_sigmoid(x: Any, scale: float = 10.0) -> jax.Array:
  r"""Heaviside step with the fast-sigmoid (SuperSpike) derivative.

  .. math::
    \frac{\partial s}{\partial x} = \frac{1}{(1 + k |x|)^2}

  with :math:`k` = ``scale``; its peak is :math:`1` at :math:`x = 0` and it
  decays polynomially, so it is never exactly zero.

  Args:
    x: pre-spike input, e.g. ``v - threshold``.
    scale: steepness :math:`k > 0`, a Python float.

  Returns:
    ``(x > 0)`` in ``x``'s dtype.

  Raises:
    ValueError: if ``scale`` is not a positive finite real number.

  >>> import jax, jax.numpy as jnp
  >>> fast_sigmoid(jnp.array([-1.0, 0.0, 2.0])).tolist()
  [0.0, 0.0, 1.0]
  >>> float(jax.grad(fast_sigmoid)(0.1))
  0.25
  """
  return _fast_sigmoid_spike(
      jnp.asarray(x), _check_scale(scale, "fast_sigmoid")
  )


def triangle(x: Any, scale: float = 1.0) -> jax.Array:
  r"""Heaviside step with a triangular (piecewise-linear) derivative.

  .. math::
    \frac{\partial s}{\partial x} = k \max(0, 1 - k |x|)

  with :math:`k` = ``scale``: a triangle of height :math:`k` and unit area,
  exactly zero for :math:`|x| \geq 1 / k`.

  Args:
    x: pre-spike input, e.g. ``v - threshold``.
    scale: :math:`k > 0`, the inverse half-width, a Python float.

  Returns:
    ``(x > 0)`` in ``x``'s dtype.

  Raises:
    ValueError: if ``scale`` is not a positive finite real number.

  >>> import functools, jax, jax.numpy as jnp
  >>> triangle(jnp.array([-1.0, 0.0, 2.0])).tolist()
  [0.0, 0.0, 1.0]
  >>> float(jax.grad(functools.partial(triangle, scale=2.0))(0.25))
  1.0
  """
  return _triangle_spike(jnp.asarray(x), _check_scale(scale, "triangle"))
