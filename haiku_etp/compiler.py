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
"""The compiler's view of a step: groups, relations, diagnostics.

``learner.compile(params, state, rng, x)`` and ``learner.report(...)`` use it;
``compile_step`` runs it alone on a ``hk.transform_with_state`` step.
"""

from haiku_etp._src.compiler.compiler import compile_step
from haiku_etp._src.compiler.compiler import CompiledStep
from haiku_etp._src.compiler.compiler import CompileError
from haiku_etp._src.compiler.compiler import Diagnostic
from haiku_etp._src.compiler.compiler import HiddenGroup
from haiku_etp._src.compiler.compiler import ParameterRole
from haiku_etp._src.compiler.compiler import ParameterStatus
from haiku_etp._src.compiler.compiler import Relation

__all__ = (
    "CompileError",
    "CompiledStep",
    "Diagnostic",
    "HiddenGroup",
    "ParameterRole",
    "ParameterStatus",
    "Relation",
    "compile_step",
)
