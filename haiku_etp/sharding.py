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
"""Data-parallel helpers: a learner state split across devices and back.

A learner state holds per-sample entries (hidden state, traces) whose
leading axis is the batch and shared ones (parameters, feedback matrices).
``shard_state`` splits the per-sample entries over devices for ``jax.pmap``
(a leading device axis) and replicates the rest; ``shard_batch`` does the
same for a batch of inputs. ``state_batch_mask`` says which entries are
per-sample, for ``jax.sharding`` meshes.
"""

from haiku_etp._src.learners.parallel import replicate
from haiku_etp._src.learners.parallel import shard_batch
from haiku_etp._src.learners.parallel import shard_state
from haiku_etp._src.learners.parallel import state_batch_mask
from haiku_etp._src.learners.parallel import unshard_batch
from haiku_etp._src.learners.parallel import unshard_state

__all__ = (
    "replicate",
    "shard_batch",
    "shard_state",
    "state_batch_mask",
    "unshard_batch",
    "unshard_state",
)
