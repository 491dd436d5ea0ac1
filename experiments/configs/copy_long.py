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
"""Copy symbols across a long delay (100 to 2,000 steps) with an LRU stack.

D-RTRL is exact on the stack, so it learns the delay online with memory flat
in T; truncated BPTT with a window shorter than the delay cannot:

python -m experiments.train --config=experiments/configs/copy_long.py
python -m experiments.compare --config=experiments/configs/copy_long.py \
    --learners=d_rtrl,bptt,tbptt:window=50
"""

from experiments.configs import common


def get_config():
  config = common.base_config()
  config.task.name = "delayed_copy"
  config.task.length = 5
  config.task.num_symbols = 4
  # T = 2 * length + delay = 510 steps.
  config.task.delay = 500
  config.model.kind = "lru"
  config.model.num_layers = 2
  config.model.hidden_size = 32
  config.model.width = 16
  # Slow modes for a long memory (Orvieto et al. use 0.9-0.999).
  config.model.r_min = 0.9
  config.model.r_max = 0.999
  config.model.max_phase = 0.314
  config.learner = "d_rtrl"
  config.learning_rate = 3e-3
  config.batch_size = 32
  config.train_steps = 400
  config.eval_every = 100
  config.eval_batches = 4
  config.log_every = 20
  config.checkpoint_every = 100
  return config
