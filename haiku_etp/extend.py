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
"""The extension API: new learners on the protocol, new ETP primitives and
their trace rules.

A model author never needs this module. Someone writing a learning rule
writes a :class:`TraceAlgorithm` (start from :class:`AlgorithmBase`; the
verdict helpers state what is exact), makes it a learner with
``from_algorithm`` and registers it by name with ``register_learner``.
Someone adding a trainable operation registers it with
``register_primitive``, gives it trace rules with
``prim.register_etp_rules(...)``, and checks the rules with
``haiku_etp.testing.drtrl_rule_oracle``. The helpers apply the rules with
the ``S`` states per position; the building blocks are the fused forms the
built-in fast paths use.
"""

from haiku_etp._src.ops.conv import conv_dimension_numbers
from haiku_etp._src.ops.conv import etp_conv_p
from haiku_etp._src.ops.dense import etp_batched_dense_p
from haiku_etp._src.ops.dense import etp_dense_p
from haiku_etp._src.ops.einsum import etp_batched_einsum_p
from haiku_etp._src.ops.einsum import etp_einsum_p
from haiku_etp._src.ops.elementwise import etp_elementwise_p
from haiku_etp._src.ops.embedding import etp_batched_embedding_p
from haiku_etp._src.ops.embedding import etp_embedding_p
from haiku_etp._src.core.primitive import DecomposedPrimitiveWarning
from haiku_etp._src.core.primitive import drtrl_init
from haiku_etp._src.core.primitive import drtrl_solve
from haiku_etp._src.core.primitive import drtrl_update
from haiku_etp._src.core.primitive import drtrl_window
from haiku_etp._src.core.primitive import ETPPrimitive
from haiku_etp._src.core.primitive import ETPRules
from haiku_etp._src.core.primitive import get_etp_rules
from haiku_etp._src.core.primitive import is_etp_primitive
from haiku_etp._src.core.primitive import mix_states
from haiku_etp._src.core.primitive import pp_init
from haiku_etp._src.core.primitive import pp_solve
from haiku_etp._src.core.primitive import register_primitive
from haiku_etp._src.core.primitive import register_primitive_pair
from haiku_etp._src.core.primitive import sum_leading
from haiku_etp._src.core.primitive import weighted_state_sum
from haiku_etp._src.core.primitive import window_form
from haiku_etp._src.ops.sparse import etp_batched_sparse_p
from haiku_etp._src.ops.sparse import etp_sparse_p
from haiku_etp._src.learners.algorithms.protocol import AlgorithmBase
from haiku_etp._src.learners.algorithms.protocol import compiler_verdicts
from haiku_etp._src.learners.algorithms.protocol import ParameterVerdict
from haiku_etp._src.learners.algorithms.protocol import Signals
from haiku_etp._src.learners.algorithms.protocol import StepNeeds
from haiku_etp._src.learners.algorithms.protocol import TraceAlgorithm
from haiku_etp._src.learners.algorithms.protocol import verdict
from haiku_etp._src.learners.algorithms.protocol import with_reasons
from haiku_etp._src.learners.factories import from_algorithm
from haiku_etp._src.learners.registry import factory_options
from haiku_etp._src.learners.registry import LearnerSpec
from haiku_etp._src.learners.registry import register_learner
from haiku_etp._src.learners.registry import unregister_learner

__all__ = (
    "AlgorithmBase",
    "DecomposedPrimitiveWarning",
    "ETPPrimitive",
    "ETPRules",
    "LearnerSpec",
    "ParameterVerdict",
    "Signals",
    "StepNeeds",
    "TraceAlgorithm",
    "compiler_verdicts",
    "conv_dimension_numbers",
    "drtrl_init",
    "drtrl_solve",
    "drtrl_update",
    "drtrl_window",
    "etp_batched_dense_p",
    "etp_batched_einsum_p",
    "etp_batched_embedding_p",
    "etp_batched_sparse_p",
    "etp_conv_p",
    "etp_dense_p",
    "etp_einsum_p",
    "etp_elementwise_p",
    "etp_embedding_p",
    "etp_sparse_p",
    "factory_options",
    "from_algorithm",
    "get_etp_rules",
    "is_etp_primitive",
    "mix_states",
    "pp_init",
    "pp_solve",
    "register_learner",
    "register_primitive",
    "register_primitive_pair",
    "sum_leading",
    "unregister_learner",
    "verdict",
    "weighted_state_sum",
    "window_form",
    "with_reasons",
)
