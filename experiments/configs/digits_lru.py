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
"""scikit-learn's 8x8 digits pixel by pixel (T = 64) with an LRU stack.

python -m experiments.train --config=experiments/configs/digits_lru.py
"""

from experiments.configs import common


def get_config():
  config = common.base_config()
  config.task.name = "digits"
  config.task.mode = "pixels"
  # The class is read from the last 8 steps' outputs.
  config.task.readout_fraction = 0.125
  config.task.test_fraction = 0.2
  config.task.split_seed = 0
  config.model.kind = "lru"
  config.model.num_layers = 2
  config.model.hidden_size = 32
  config.model.width = 32
  config.model.r_min = 0.5
  config.model.r_max = 0.99
  config.model.max_phase = 3.14
  config.learner = "d_rtrl"
  config.learning_rate = 3e-3
  config.batch_size = 64
  config.train_steps = 500
  config.eval_every = 100
  config.log_every = 50
  config.checkpoint_every = 250
  return config
