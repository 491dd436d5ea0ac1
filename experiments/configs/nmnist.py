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
"""N-MNIST event frames: Conv2D -> LIF -> flatten -> leaky readout.

Needs the published ``Train/<digit>/*.bin`` and ``Test/<digit>/*.bin``
directories (not downloaded here) under ``task.root``:

python -m experiments.train --config=experiments/configs/nmnist.py \
    --config.task.root=/data/nmnist --workdir=runs/nmnist

Frames are ``(34, 34, 2)`` per step (NHWC: on and off polarities as
channels). D-RTRL reaches the readout through cross-group traces over the
flatten and announces no approximation on this model.
"""

from experiments.configs import common


def get_config():
  config = common.base_config()
  config.task.name = "nmnist"
  config.task.root = "data/nmnist"
  # 30 bins of 10 ms over the 300 ms of a recording.
  config.task.num_steps = 30
  config.task.max_time_us = 300_000
  config.task.readout_fraction = 1.0
  config.model.kind = "conv_snn"
  config.model.hidden_size = 16
  config.model.kernel_size = 3
  config.model.stride = 2
  config.model.neuron = "lif"
  config.model.tau = 10.0
  config.model.readout = "leaky"
  config.model.readout_tau = 10.0
  config.model.input_gain = 0.5
  config.learner = "d_rtrl"
  config.learning_rate = 2e-3
  config.batch_size = 32
  config.train_steps = 5000
  config.eval_every = 500
  config.log_every = 50
  config.checkpoint_every = 500
  return config
