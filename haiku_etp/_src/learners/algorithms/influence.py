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
"""What the influence-based learners (RTRL, SnAp, UORO) share: the avals of a
compiled step's parameters and hidden state, their sizes, and whether the step
reads its rng."""

import math

import jax
import numpy as np

from haiku_etp._src.compiler import jacobians


def hidden_avals(compiled) -> list:
  """The avals of the step's hidden-state leaves, in the state's leaf order."""
  return [compiled.program.aval(compiled.hidden_in(l)) for l in compiled.hidden]


def param_avals(compiled) -> dict:
  """``{parameter path: aval}`` of the step's parameters."""
  program = compiled.program
  return {
      path: program.aval(program.invars[i])
      for i, path in enumerate(compiled.param_paths)
  }


def uses_rng(compiled) -> bool:
  """Whether the step reads its rng (per-sample replays would redraw)."""
  children = jax.tree_util.treedef_children(compiled.in_tree)
  first = compiled.num_param_leaves + compiled.num_state_leaves
  rng_ids = set(compiled.program.invars[first : first + children[2].num_leaves])
  return any(
      a in rng_ids
      for node in compiled.program.nodes
      for a in node.ins
      if not isinstance(a, jacobians.Lit)
  )


def size(aval) -> int:
  """The number of entries of ``aval``."""
  return int(math.prod(aval.shape))


def itemsize(aval) -> int:
  """The bytes of one entry of ``aval``."""
  return np.dtype(aval.dtype).itemsize
