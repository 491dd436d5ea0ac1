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
"""Spiking Heidelberg Digits: LIF layer and leaky readout, D-RTRL.

Needs the published ``shd_train.h5`` and ``shd_test.h5`` (not downloaded
here); point the config at them:

python -m experiments.train --config=experiments/configs/shd.py \
    --config.task.path_train=/data/shd/shd_train.h5 \
    --config.task.path_test=/data/shd/shd_test.h5 --workdir=runs/shd

SSC's files have the same layout (``num_classes`` comes from the labels).
"""

from experiments.configs import common


def get_config():
  config = common.base_config()
  config.task.name = "shd"
  config.task.path_train = "data/shd/shd_train.h5"
  config.task.path_test = "data/shd/shd_test.h5"
  # 100 bins of 14 ms over the first 1.4 s; 5 adjacent channels summed into
  # one (700 -> 140 inputs).
  config.task.num_steps = 100
  config.task.max_time = 1.4
  config.task.pool = 5
  config.task.readout_fraction = 1.0
  config.model.kind = "snn"
  config.model.hidden_size = 256
  config.model.neuron = "lif"
  config.model.tau = 20.0
  config.model.synapse_tau = 5.0
  config.model.readout = "leaky"
  # True: RecurrentALIF/RecurrentLIF neurons (e-prop's network with alif).
  config.model.recurrent = False
  config.model.readout_tau = 20.0
  config.model.input_gain = 1.0
  config.learner = "d_rtrl"
  config.learning_rate = 2e-3
  config.batch_size = 64
  config.train_steps = 5000
  config.eval_every = 500
  config.log_every = 50
  config.checkpoint_every = 500
  return config
