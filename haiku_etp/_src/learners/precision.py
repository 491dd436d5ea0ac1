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
"""Traces stored in a low-precision dtype between steps.

:class:`StoredIn` wraps any trace algorithm: its floating traces live in the
learner state in ``dtype`` (``bfloat16`` or ``float16``: half the bytes of
float32), and every step reads them back in the dtype the algorithm made
them in, rolls and contracts them there, and stores the result rounded to
``dtype``. XLA fuses the conversions into the loops that read and write the
traces, so the trace traffic halves while the arithmetic keeps the
parameters' precision. Feedback matrices (e-prop's random or adaptive ``B``)
stay in their own dtype: they are weights, not traces.
"""

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.compiler import recording
from haiku_etp._src.compiler import compiler as compiler_lib
from haiku_etp._src.learners.algorithms import protocol

TRACE_DTYPES = ("bfloat16", "float16", "float32", "float64")


def check_trace_dtype(trace_dtype: Any) -> Optional[np.dtype]:
  """``trace_dtype`` as a NumPy dtype (``None`` stays ``None``).

  Raises:
    ValueError: unless it names a floating dtype of ``TRACE_DTYPES``, or
      for ``float64`` while JAX's 64-bit mode is off (JAX would store the
      traces in float32 and warn at every conversion).
  """
  if trace_dtype is None:
    return None
  try:
    dtype = jnp.dtype(trace_dtype)
  except TypeError:
    dtype = None
  if dtype is None or dtype.name not in TRACE_DTYPES:
    raise ValueError(
        f"trace_dtype must be None or one of {TRACE_DTYPES}, got "
        f"{trace_dtype!r}."
    )
  check_available(dtype)
  return dtype


def check_available(dtype: Any) -> None:
  """Raises ``ValueError`` when JAX cannot hold traces of ``dtype`` now
  (``float64`` with 64-bit mode off)."""
  if jax.dtypes.canonicalize_dtype(dtype) != dtype:
    raise ValueError(
        f"trace_dtype={dtype.name!r} needs JAX's 64-bit mode, which is off "
        "(JAX would store the traces in "
        f"{jax.dtypes.canonicalize_dtype(dtype).name}); enable it at startup "
        'with jax.config.update("jax_enable_x64", True) or the environment '
        "variable JAX_ENABLE_X64=1, or use trace_dtype=None."
    )


@dataclasses.dataclass(frozen=True)
class StoredIn:
  """``inner``'s traces stored in ``dtype``; everything else is ``inner``'s.

  Attributes:
    inner: a :class:`~haiku_etp.extend.TraceAlgorithm`.
    dtype: the storage dtype of its floating traces.
  """

  inner: Any
  dtype: Any

  def __getattr__(self, name: str):
    # Optional members (needs_for, fused_solve, ...) are the inner's.
    if name in ("inner", "dtype"):
      raise AttributeError(name)
    return getattr(self.inner, name)

  @property
  def name(self) -> str:
    return self.inner.name

  @property
  def form(self) -> str:
    return self.inner.form

  @property
  def needs(self) -> protocol.StepNeeds:
    return self.inner.needs

  @property
  def cross_budget(self):
    return self.inner.cross_budget

  def _dtypes(self, compiled: compiler_lib.CompiledStep) -> dict:
    """The dtype the inner algorithm computes each entry in (``None`` for
    entries kept as they are)."""
    shapes = jax.eval_shape(lambda: self.inner.init(compiled))
    keep = protocol.step_needs(self.inner, compiled).feedback
    return {
        k: (
            None
            if (keep and k.startswith(keep))
            or not jnp.issubdtype(v.dtype, jnp.floating)
            else v.dtype
        )
        for k, v in shapes.items()
    }

  def _store(self, compiled: compiler_lib.CompiledStep, traces: dict) -> dict:
    dtypes = self._dtypes(compiled)
    return {
        k: v if dtypes.get(k) is None else v.astype(self.dtype)
        for k, v in traces.items()
    }

  def _load(self, compiled: compiler_lib.CompiledStep, traces: dict) -> dict:
    dtypes = self._dtypes(compiled)
    return {
        k: v if dtypes.get(k) is None else v.astype(dtypes[k])
        for k, v in traces.items()
    }

  def init(self, compiled: compiler_lib.CompiledStep) -> dict:
    # 64-bit mode may have been switched off since the learner was made.
    check_available(self.dtype)
    return self._store(compiled, self.inner.init(compiled))

  def operands(self, compiled: compiler_lib.CompiledStep, params: Any):
    return self.inner.operands(compiled, params)

  def roll(
      self,
      compiled: compiler_lib.CompiledStep,
      traces: protocol.Traces,
      record: recording.StepRecord,
      operands: Any,
  ) -> dict:
    new = self.inner.roll(
        compiled, self._load(compiled, traces), record, operands
    )
    return self._store(compiled, new)

  @property
  def roll_window(self):
    """The inner's closed-form window roll on loaded traces (``None``
    when the inner rolls step by step)."""
    inner = getattr(self.inner, "roll_window", None)
    if inner is None:
      return None

    def roll_window(
        compiled: compiler_lib.CompiledStep,
        traces: protocol.Traces,
        records: recording.StepRecord,
        operands: Any,
    ) -> dict:
      new = inner(compiled, self._load(compiled, traces), records, operands)
      return self._store(compiled, new)

    return roll_window

  def solve(
      self,
      compiled: compiler_lib.CompiledStep,
      traces: protocol.Traces,
      signals: protocol.Signals,
      operands: Any,
  ):
    return self.inner.solve(
        compiled, self._load(compiled, traces), signals, operands
    )

  def fused_solve(
      self,
      compiled: compiler_lib.CompiledStep,
      trace: protocol.Traces,
      new_trace,
      prev,
      immediate,
      operands: Any,
  ):
    return self.inner.fused_solve(
        compiled,
        self._load(compiled, trace),
        self._load(compiled, new_trace),
        prev,
        immediate,
        operands,
    )

  def verdicts(self, compiled: compiler_lib.CompiledStep) -> tuple:
    return self.inner.verdicts(compiled)

  def note(self, compiled: compiler_lib.CompiledStep) -> str:
    return self.inner.note(compiled)

  def check(
      self, compiled: compiler_lib.CompiledStep, traces: protocol.Traces
  ) -> None:
    self.inner.check(compiled, traces)


def store_traces_in(algorithm: protocol.TraceAlgorithm, trace_dtype):
  """``algorithm`` with its traces stored in ``trace_dtype`` (``None``:
  unchanged)."""
  dtype = check_trace_dtype(trace_dtype)
  return algorithm if dtype is None else StoredIn(algorithm, dtype)
