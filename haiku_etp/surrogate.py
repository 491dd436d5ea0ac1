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
"""Surrogate spike functions: a Heaviside step with a smooth derivative.

``haiku_etp.surrogate.fast_sigmoid(v - threshold, scale=10.0)`` spikes where
its argument is positive; its derivative is the surrogate's. Pass one (or a
``functools.partial`` of one with another ``scale``) as ``surrogate=`` to
:class:`haiku_etp.LIF` and :class:`haiku_etp.ALIF`.
"""

from haiku_etp._src.modules.surrogate import fast_sigmoid
from haiku_etp._src.modules.surrogate import sigmoid
from haiku_etp._src.modules.surrogate import triangle

__all__ = (
    "fast_sigmoid",
    "sigmoid",
    "triangle",
)
