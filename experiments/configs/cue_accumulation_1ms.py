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
"""e-prop's evidence accumulation at its own 1 ms resolution (T = 2,250).

Bellec et al. (2020), Fig. 3: 7 cues of 100 ms, 50 ms apart, a 1,050 ms
delay and a 150 ms recall, 40 Hz cues and 10 Hz noise, with adapting
neurons whose threshold adaptation lasts 2 s (tau_adapt = 2,000 ms):

python -m experiments.train --config=experiments/configs/cue_accumulation_1ms.py
"""

from experiments.configs import common


def get_config():
  config = common.base_config()
  config.task.name = "cue_accumulation"
  config.task.num_cues = 7
  config.task.cue_duration = 100
  config.task.cue_gap = 50
  # 7 * 100 + 6 * 50 + 1050 + 200 = 2,250 steps of 1 ms.
  config.task.delay = 1050
  config.task.recall_duration = 200
  config.task.population_size = 10
  config.task.rate = 40.0
  config.task.noise_rate = 10.0
  config.task.dt = 1e-3
  config.model.kind = "snn"
  config.model.hidden_size = 50
  config.model.neuron = "alif"
  config.model.tau = 20.0
  config.model.tau_adapt = 2000.0
  config.model.beta_adapt = 1.8
  config.model.readout = "leaky"
  config.model.recurrent = True
  config.model.readout_tau = 20.0
  config.model.input_gain = 1.0
  config.learner = "d_rtrl"
  config.learning_rate = 5e-3
  config.batch_size = 32
  config.train_steps = 200
  config.eval_every = 50
  config.eval_batches = 4
  config.log_every = 10
  config.checkpoint_every = 50
  return config
