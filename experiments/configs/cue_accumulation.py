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
  # e-prop's task at e-prop's rates (40 Hz cues, 10 Hz noise), shortened to
  # T = 110 steps of 5 ms: 7 cues of 40 ms, 20 ms apart, a 100 ms delay and
  # a 50 ms recall.
  config.task.num_cues = 7
  config.task.cue_duration = 8
  config.task.cue_gap = 4
  config.task.delay = 20
  config.task.recall_duration = 10
  config.task.population_size = 10
  config.task.rate = 40.0
  config.task.noise_rate = 10.0
  config.task.dt = 5e-3
  config.model.kind = "snn"
  config.model.hidden_size = 64
  config.model.neuron = "alif"
  config.model.tau = 20.0
  config.model.tau_adapt = 200.0
  config.model.beta_adapt = 1.0
  config.model.readout = "leaky"
  # True: RecurrentALIF/RecurrentLIF neurons (e-prop's network with alif).
  config.model.recurrent = False
  config.model.readout_tau = 10.0
  config.model.input_gain = 1.0
  config.learner = "d_rtrl"
  config.learning_rate = 1e-2
  config.batch_size = 64
  config.train_steps = 500
  config.eval_every = 100
  config.log_every = 20
  config.checkpoint_every = 100
  return config
