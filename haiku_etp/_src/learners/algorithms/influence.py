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
"""What the influence-based learners (RTRL, SnAp, UORO) share: the parameters
that reach hidden state, the avals of a compiled step's parameters and hidden
state, their sizes, whether the step reads its rng, and the one check of the
influence traces against ``max_trace_bytes``."""

import math
from typing import Callable, Mapping, Optional, Union

import jax
import numpy as np

from haiku_etp._src.compiler import compiler as compiler_lib
from haiku_etp._src.compiler import recording

# The default ``max_trace_bytes`` of the learners that keep influence entries.
DEFAULT_TRACE_BYTES = 1 << 30


def temporal_paths(compiled: compiler_lib.CompiledStep) -> tuple[str, ...]:
  """The parameters that reach hidden state, in leaf order."""
  return tuple(
      p.path
      for p in compiled.parameters
      if p.role != compiler_lib.ParameterRole.NON_TEMPORAL
  )


def hidden_avals(compiled: compiler_lib.CompiledStep) -> list:
  """The avals of the step's hidden-state leaves, in the state's leaf order."""
  return [compiled.program.aval(compiled.hidden_in(l)) for l in compiled.hidden]


def param_avals(compiled: compiler_lib.CompiledStep) -> dict:
  """``{parameter path: aval}`` of the step's parameters."""
  program = compiled.program
  return {
      path: program.aval(program.invars[i])
      for i, path in enumerate(compiled.param_paths)
  }


def uses_rng(compiled: compiler_lib.CompiledStep) -> bool:
  """Whether the step reads its rng (per-sample replays would redraw)."""
  children = jax.tree_util.treedef_children(compiled.in_tree)
  first = compiled.num_param_leaves + compiled.num_state_leaves
  num_rng = children[2].num_leaves  # type: ignore[attr-defined]
  rng_ids = set(compiled.program.invars[first : first + num_rng])
  return any(
      a in rng_ids
      for node in compiled.program.nodes
      for a in node.ins
      if not isinstance(a, recording.Lit)
  )


# Ops that combine entries along an axis, with the param naming the axes.
_AXES_PARAM = {
    "reduce_sum": "axes",
    "reduce_max": "axes",
    "reduce_min": "axes",
    "reduce_prod": "axes",
    "reduce_and": "axes",
    "reduce_or": "axes",
    "argmax": "axes",
    "argmin": "axes",
    "cumsum": "axis",
    "cumprod": "axis",
    "cummax": "axis",
    "cummin": "axis",
    "cumlogsumexp": "axis",
    "sort": "dimension",
}


def mixes_samples(compiled: compiler_lib.CompiledStep) -> bool:
  """Whether the step combines samples: a reduction, cumulative op or sort
  along the batch axis (axis 0) of a value computed from the inputs or the
  state (batch statistics, as ``hk.BatchNorm`` in training takes)."""
  num_p = compiled.num_param_leaves
  program = compiled.program
  data = set(program.invars[num_p:])
  for node in program.nodes:
    if not any(a in data for a in node.ins if not isinstance(a, recording.Lit)):
      continue
    data.update(node.outs)
    key = _AXES_PARAM.get(node.prim.name)
    if key is None:
      continue
    axes = node.params.get(key)
    axes = axes if isinstance(axes, (tuple, list)) else (axes,)
    if 0 in tuple(int(a) for a in axes):
      return True
  return False


def size(aval: Union[jax.core.ShapedArray, jax.Array]) -> int:
  """The number of entries of ``aval``."""
  return int(math.prod(aval.shape))


def itemsize(aval: Union[jax.core.ShapedArray, jax.Array]) -> int:
  """The bytes of one entry of ``aval``."""
  return np.dtype(aval.dtype).itemsize


def trace_bytes(traces: Mapping[str, jax.Array], prefix: str) -> int:
  """The bytes of the trace entries whose labels start with ``prefix``."""
  return sum(
      [size(v) * itemsize(v) for k, v in traces.items() if k.startswith(prefix)]
  )


def check_trace_budget(
    traces: Mapping[str, jax.Array],
    prefix: str,
    max_trace_bytes: Optional[int],
    *,
    learner: str,
    entries: Callable[[], str],
    remedies: str,
) -> None:
  """Raises ``ValueError`` when the entries under ``prefix`` exceed
  ``max_trace_bytes`` (``None``: no limit).

  The message is the same for every learner: ``"<learner> keeps <entries>
  influence entries for this step (<bytes>), over max_trace_bytes=<budget>.
  Use <remedies>, or raise max_trace_bytes."``, with ``entries()`` (called
  only on failure) saying how many and why.
  """
  if max_trace_bytes is None:
    return
  nbytes = trace_bytes(traces, prefix)
  if nbytes <= max_trace_bytes:
    return
  raise ValueError(
      f"{learner} keeps {entries()} influence entries for this step "
      f"({compiler_lib.format_bytes(nbytes)}), over "
      f"max_trace_bytes={compiler_lib.format_bytes(max_trace_bytes)}. "
      f"Use {remedies}, or raise max_trace_bytes."
  )
