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
"""The adding problem (regression) with an LSTM.

python -m experiments.train --config=experiments/configs/adding.py
"""

from experiments.configs import common


def get_config():
  config = common.base_config()
  config.task.name = "adding"
  config.task.num_steps = 50
  config.model.kind = "lstm"
  config.model.hidden_size = 32
  config.learner = "d_rtrl"
  config.learning_rate = 5e-3
  config.batch_size = 64
  config.train_steps = 500
  return config
