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
"""Testing utilities: rule oracles, a BPTT oracle, gradient comparisons and
one registered example per public module."""

from haiku_etp._src.testing.descriptors import ExampleRun
from haiku_etp._src.testing.descriptors import MODULE_LEARNERS
from haiku_etp._src.testing.descriptors import make_module_learner
from haiku_etp._src.testing.descriptors import MODULE_EXAMPLES
from haiku_etp._src.testing.descriptors import ModuleExample
from haiku_etp._src.testing.descriptors import mse
from haiku_etp._src.testing.descriptors import run_module_example
from haiku_etp._src.testing.descriptors import TRUNCATED_BPTT
from haiku_etp._src.testing.oracles import bptt_grads
from haiku_etp._src.testing.oracles import cosine_similarity
from haiku_etp._src.testing.oracles import drtrl_rule_oracle
from haiku_etp._src.testing.oracles import expect_warning
from haiku_etp._src.testing.oracles import OracleResult
from haiku_etp._src.testing.oracles import pp_rule_oracle
from haiku_etp._src.testing.oracles import relative_error

__all__ = (
    "ExampleRun",
    "MODULE_EXAMPLES",
    "MODULE_LEARNERS",
    "ModuleExample",
    "OracleResult",
    "TRUNCATED_BPTT",
    "bptt_grads",
    "cosine_similarity",
    "drtrl_rule_oracle",
    "expect_warning",
    "make_module_learner",
    "mse",
    "pp_rule_oracle",
    "relative_error",
    "run_module_example",
)
