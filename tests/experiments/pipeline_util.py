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
"""Tiny training configs shared by the pipeline tests."""

from experiments.configs import adding
from experiments.configs import cue_accumulation
from experiments.configs import delayed_copy


def tiny_config(name: str, **overrides):
  """A config of task ``name`` small enough for a test."""
  config = dict(
      cue_accumulation=cue_accumulation,
      delayed_copy=delayed_copy,
      adding=adding,
  )[name].get_config()
  if name == "cue_accumulation":
    config.task.update(
        dict(
            num_cues=3,
            cue_duration=4,
            cue_gap=2,
            delay=4,
            recall_duration=4,
            population_size=4,
        )
    )  # pyformat: disable
  elif name == "delayed_copy":
    config.task.update(dict(length=3, num_symbols=3, delay=3))
  else:
    config.task.num_steps = 12
  config.model.hidden_size = 8
  config.batch_size = 8
  config.train_steps = 6
  config.log_every = 2
  config.eval_every = 4
  config.eval_batches = 2
  config.checkpoint_every = 3
  config.learning_rate = 0.1
  if name == "cue_accumulation":
    # Sparse spikes need a wider layer and batch to learn in a few steps.
    config.update(dict(batch_size=16, learning_rate=0.03))
    config.model.hidden_size = 16
  config.update(overrides)
  return config
