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
"""The benchmark binaries, each run with ``python -m``.

``experiments.benchmarks.benchmark``: time and compiled memory of every
learner's ``sequence_grad`` on the reference models, at each sequence length
and window. ``experiments.benchmarks.rules``: the D-RTRL trace update and
solve per primitive, fast path against generic rules, CPU-tuned against
plain forms. ``experiments.benchmarks.scale``: event-driven forward passes,
reduced-precision traces, and large sparse networks.
``experiments.benchmarks.length_table``: memory and time of one sequence
gradient against the sequence length. ``timing`` holds the timers and the
byte count they share.

The binaries are not imported here: some define flags of the same name.
"""
