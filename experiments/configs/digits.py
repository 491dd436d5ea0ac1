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
"""scikit-learn's 8x8 digits read row by row (8 steps of 8 pixels), a GRU.

A real dataset that ships inside a package (the ``sklearn`` extra):

python -m experiments.train --config=experiments/configs/digits.py \
    --config.learner=es_d_rtrl --config.decay=0.9
"""

from experiments.configs import common


def get_config():
  config = common.base_config()
  config.task.name = "digits"
  # "rows": 8 steps of 8 inputs; "pixels": 64 steps of 1.
  config.task.mode = "rows"
  # The class is read from the last step's output.
  config.task.readout_fraction = 0.125
  config.task.test_fraction = 0.2
  config.task.split_seed = 0
  config.model.kind = "gru"
  config.model.hidden_size = 64
  config.learner = "d_rtrl"
  config.decay = 0.9
  config.learning_rate = 5e-3
  config.batch_size = 64
  config.train_steps = 500
  config.eval_every = 100
  config.log_every = 50
  config.checkpoint_every = 250
  return config
