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
"""e-prop's evidence accumulation (Bellec et al. 2020, Fig. 3) with D-RTRL.

python -m experiments.train --config=experiments/configs/cue_accumulation.py
"""

from experiments.configs import common


def get_config():
  config = common.base_config()
  config.task.name = "cue_accumulation"
  config.model.kind = "snn"
  config.model.hidden_size = 64
  config.model.neuron = "alif"
  config.model.tau = 20.0
  config.model.tau_adapt = 200.0
  config.model.beta_adapt = 1.0
  config.model.readout = "leaky"
  config.model.readout_tau = 10.0
  config.model.input_gain = 1.0
  config.learner = "d_rtrl"
  config.learning_rate = 1e-2
  config.batch_size = 64
  config.train_steps = 300
  config.eval_every = 100
  config.log_every = 20
  config.checkpoint_every = 100
  return config
