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
"""Recall the symbol of `lag` steps before on an endless stream.

No sequence boundaries: the learner state runs on from chunk to chunk and
the optimizer steps every `update_every` steps along the stream. The
alternative a user has here is truncated BPTT over windows of `k`:

python -m experiments.train --config=experiments/configs/stream_recall.py
python -m experiments.compare --config=experiments/configs/stream_recall.py \
    --learners=d_rtrl,tbptt:window=10
"""

from experiments.configs import common


def get_config():
  config = common.base_config()
  config.task.name = "stream_recall"
  config.task.num_symbols = 4
  config.task.lag = 20
  config.task.chunk = 200
  config.model.kind = "lru"
  config.model.num_layers = 1
  config.model.hidden_size = 32
  config.model.width = 16
  config.model.r_min = 0.8
  config.model.r_max = 0.99
  config.model.max_phase = 0.314
  config.learner = "d_rtrl"
  config.update_every = 20
  config.learning_rate = 3e-3
  config.batch_size = 16
  config.train_steps = 100
  config.eval_every = 50
  config.eval_batches = 2
  config.log_every = 10
  config.checkpoint_every = 50
  return config
