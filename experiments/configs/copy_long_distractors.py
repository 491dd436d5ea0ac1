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
"""``copy_long`` where only credit across the delay solves the task.

The delay is filled with random symbols on channels of their own
(``task.distractors``); the model is ``copy_long``'s. Untrained, the LRU's
slow modes carry the distractors as well as the symbols, the distractors
last, and a readout trained on them stays near chance (truncated BPTT with a
50-step window: 0.28 after 400 updates, chance 0.25); keeping the symbols
and not the distractors takes the gradient across the 500-step delay (BPTT:
0.52):

python -m experiments.compare --config=experiments/configs/copy_long_distractors.py \\
    --learners=d_rtrl,bptt,tbptt:window=50
"""

from experiments.configs import copy_long


def get_config():
  config = copy_long.get_config()
  config.task.distractors = True
  return config
