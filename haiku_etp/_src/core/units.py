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
"""saiunit support for the ETP ops: bind on mantissas, put the unit back."""

from typing import Any, cast

import jax
import saiunit as u


def split(value: Any) -> tuple[jax.Array, u.Unit]:
  """Splits a value (array or ``saiunit.Quantity``) into mantissa and unit."""
  return u.split_mantissa_unit(value)


def product(a: u.Unit, b: u.Unit) -> u.Unit:
  """``a * b``, the unit of ``x * w`` (saiunit types a product of units as
  ``Unit | Quantity``; of two units it is a unit)."""
  return cast(u.Unit, a * b)


def bias_mantissa(
    bias: Any, unit: u.Unit, op_name: str
) -> "jax.typing.ArrayLike":
  """Returns the bias mantissa expressed in ``unit`` (that of ``x * w``).

  Raises:
    ValueError: if the bias's physical dimension differs from ``unit``'s.
  """
  _, bias_unit = split(bias)
  if bias_unit.dim != unit.dim:
    raise ValueError(
        f"The bias of {op_name} has unit {bias_unit}, which does not match "
        f"unit(x) * unit(weight) = {unit}."
    )
  return u.Quantity(bias).to_decimal(unit)


def with_unit(mantissa: "jax.typing.ArrayLike", unit: u.Unit) -> Any:
  """Attaches ``unit`` to ``mantissa``; a plain array if it is unitless."""
  return u.maybe_decimal(u.Quantity(mantissa, unit=unit))
