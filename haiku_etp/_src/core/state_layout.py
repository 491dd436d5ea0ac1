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
"""Where a learner keeps its entries in the Haiku state: one home for the keys.

A learner's state is the model's Haiku state plus modules whose names start
with :data:`LEARNER_PREFIX`:

- ``"~etp/<algorithm name>"`` (:func:`trace_key`): the algorithm's traces,
  ``{label: array}``;
- ``"~etp/initial"`` (:data:`INITIAL_KEY`): the initial hidden and per-sample
  state that ``reset`` restores;
- ``"~etp/shards"`` (:data:`SHARDS_KEY`): the shard index of a state split
  across devices.

The labels inside the traces belong to the algorithms; their prefixes are
here so that the driver, the data-parallel helpers and the tools read them
in one place. Labels under :data:`SHARED_PREFIX` are not traces but the
algorithm's own fixed or slowly adapted quantities (a feedback matrix): kept
across sequences and resets, the same for every sample (replicated, not
sharded).
"""

from typing import Mapping

import jax
import jax.numpy as jnp

LEARNER_PREFIX = "~etp"
INITIAL_KEY = LEARNER_PREFIX + "/initial"
SHARDS_KEY = LEARNER_PREFIX + "/shards"

SHARED_PREFIX = "shared:"
# e-prop's feedback matrices: ``"shared:feedback:<relation>"``.
FEEDBACK_PREFIX = SHARED_PREFIX + "feedback:"
# RTRL's influence matrices: ``"influence:<parameter path>"``.
INFLUENCE_PREFIX = "influence:"
# SnAp-n's stored entries: ``"snap:<path>"`` (``"snap:<path>/<k>"`` and
# ``"snap:<path>/<k>:bias"`` on dense operands).
SNAP_PREFIX = "snap:"
# UORO's rank-one factors: ``"uoro:u"`` over the hidden values and
# ``"uoro:theta:<parameter path>"`` over each parameter.
UORO_U = "uoro:u"
UORO_THETA_PREFIX = "uoro:theta:"


def trace_key(name: str) -> str:
  """The state module that holds the traces of the algorithm ``name``."""
  return f"{LEARNER_PREFIX}/{name}"


def is_learner_entry(module_name: str) -> bool:
  """Whether a state module is the learner's own (not the model's)."""
  return module_name.startswith(LEARNER_PREFIX)


def is_shared(label: str) -> bool:
  """Whether a trace label is a shared entry (:data:`SHARED_PREFIX`)."""
  return label.startswith(SHARED_PREFIX)


def zeros_like(entries: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Traces restarted from zero (between sequences, after a burn-in); the
  shared entries (:data:`SHARED_PREFIX`) are kept."""
  return {
      k: v if is_shared(k) else jnp.zeros_like(v) for k, v in entries.items()
  }
