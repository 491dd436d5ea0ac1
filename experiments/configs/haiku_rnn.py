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
"""dm-haiku's own RNN, unmodified, on the delayed copy task.

The core of Haiku's RNN example, ``hk.DeepRNN([hk.LSTM(n), jax.nn.relu,
hk.LSTM(n)])`` with an ``hk.Linear`` readout, run step by step through
``haiku_etp.RNNCoreStep``: no layer of it is rewritten for the library.
D-RTRL reads its matmuls and gates as the library's LSTM (the recurrent
matmuls are cut, announced); ``--config.learner=rtrl`` is exact.

python -m experiments.train --config=experiments/configs/haiku_rnn.py
"""

from experiments.configs import delayed_copy


def get_config():
  # The delayed copy config, with Haiku's own core in place of the GRU.
  config = delayed_copy.get_config()
  config.model.kind = "haiku_deep_rnn"
  config.model.hidden_size = 32
  return config
