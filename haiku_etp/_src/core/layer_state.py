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
"""Hidden state that ``hk.layer_stack`` stacks, kept per layer.

``hk.layer_stack`` (and any ``scan`` over layers) creates the state of the
layers it repeats with a leading layer axis: a leaky layer's ``v`` becomes
one ``(layers, batch, ...)`` leaf, which is not batch first and which the
scan slices per layer. The learners keep such a leaf as one hidden leaf per
layer instead, named ``v@layer0``, ``v@layer1``, ... (with the hidden or
per-sample suffix), each batch first, and stack them back for the model's
own ``apply``. The compiler sees through that stacking (a layer's slice of
the stack is the layer's own leaf), so every layer's state is a hidden group
of its own, exactly as for layers written in a Python loop.

:func:`per_layer` wraps a model so; its ``init`` finds the leaves (those a
scan in the step slices along the leading axis) and splits them, its
``apply`` takes either form and returns the form it was given.
"""

import re
from typing import Any, Optional

import haiku as hk
import jax
from jax import lax
from jax import tree_util
import numpy as np

from haiku_etp._src.core import program as program_lib
from haiku_etp._src.core import state as state_lib

LAYER_MARK = state_lib.LAYER_MARK
_SUFFIXES = (state_lib.HIDDEN_SUFFIX, state_lib.SAMPLE_SUFFIX)
_LAYER_NAME = re.compile(
    rf"^(.*){re.escape(LAYER_MARK)}(\d+)({'|'.join(map(re.escape, _SUFFIXES))})$"
)
_Leaf = tuple[str, str]  # (module name, entry name)


def layer_name(name: str, layer: int) -> str:
  """The per-layer name of stacked entry ``name`` (``v:hidden`` ->
  ``v@layer0:hidden``)."""
  for suffix in _SUFFIXES:
    if name.endswith(suffix):
      return f"{name[: -len(suffix)]}{LAYER_MARK}{layer}{suffix}"
  raise ValueError(f"{name!r} is neither hidden nor per-sample state.")


def _parse(name: str) -> Optional[tuple[str, int]]:
  """``(stacked name, layer)`` of a per-layer name, else ``None``."""
  m = _LAYER_NAME.match(name)
  return None if m is None else (m.group(1) + m.group(3), int(m.group(2)))


def stacked_leaves(
    model: hk.TransformedWithState,
    params: Any,
    state: Any,
    rng: Optional[jax.Array],
    *args: Any,
) -> dict[_Leaf, int]:
  """``{(module, name): layers}`` of the hidden and per-sample leaves of
  ``state`` that a scan in the step (``hk.layer_stack``, ``hk.scan``)
  slices along their leading axis.

  Found by tracing ``model.apply`` as the compiler does; a step that cannot
  be traced here finds none (the compiler then says what is wrong).
  """
  candidates = [
      (k, m, n, v)
      for k, (m, n, v) in enumerate(state_lib.iter_state(state))
      if (state_lib.is_hidden_name(n) or state_lib.is_sample_name(n))
      and np.ndim(v) >= 2
  ]
  if not candidates:
    return {}
  params = hk.data_structures.to_mutable_dict(params)
  state = hk.data_structures.to_mutable_dict(state)
  num_p = len(tree_util.tree_leaves(params))
  try:
    traced = program_lib.trace(model.apply, params, state, rng, *args)
  except Exception:  # pylint: disable=broad-except
    return {}
  invars, sliced = traced.program.invars, traced.flattener.sliced
  return {
      (m, n): int(np.shape(v)[0])
      for k, m, n, v in candidates
      if invars[num_p + k] in sliced
  }


def split(state: Any, leaves: dict[_Leaf, int]) -> dict:
  """``state`` with each of ``leaves`` as one entry per layer."""
  out = {m: dict(e) for m, e in state.items()}
  for (m, n), layers in leaves.items():
    value = out[m].pop(n)
    for i in range(layers):
      out[m][layer_name(n, i)] = lax.index_in_dim(value, i, keepdims=False)
  return out


def _per_layer_entries(state: Any) -> dict[_Leaf, list[str]]:
  """``{(module, stacked name): per-layer names in layer order}``."""
  found: dict[_Leaf, dict[int, str]] = {}
  for m, e in state.items():
    for n in e:
      parsed = _parse(n)
      if parsed is not None:
        found.setdefault((m, parsed[0]), {})[parsed[1]] = n
  return {k: [v[i] for i in sorted(v)] for k, v in found.items()}


def restack(state: Any) -> dict:
  """The model's own form of a per-layer ``state`` (:func:`split`'s
  inverse); a state without per-layer entries is returned as it is."""
  groups = _per_layer_entries(state)
  if not groups:
    return state
  return _restack(state, groups)


def _restack(state: Any, groups: dict[_Leaf, list[str]]) -> dict:
  out = {m: dict(e) for m, e in state.items()}
  for (m, n), names in groups.items():
    rows = [lax.expand_dims(out[m].pop(k), (0,)) for k in names]
    out[m][n] = lax.concatenate(rows, 0)
  return out


def per_layer(model: hk.TransformedWithState) -> hk.TransformedWithState:
  """``model`` with stacked hidden and per-sample state kept per layer.

  ``init`` splits the leaves :func:`stacked_leaves` finds; ``apply`` given
  a per-layer state stacks it for ``model.apply`` and splits the new state
  the same way (given the model's own form, it is ``model.apply``).
  """

  def init(rng: Optional[jax.Array], *args: Any):
    params, state = model.init(rng, *args)
    leaves = stacked_leaves(model, params, state, rng, *args)
    return params, (split(state, leaves) if leaves else state)

  def apply(params: Any, state: Any, rng: Optional[jax.Array], *args: Any):
    groups = _per_layer_entries(state)
    if not groups:
      return model.apply(params, state, rng, *args)
    out, new_state = model.apply(params, _restack(state, groups), rng, *args)
    leaves = {k: len(names) for k, names in groups.items()}
    return out, split(new_state, leaves)

  return hk.TransformedWithState(init=init, apply=apply)
