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
r"""Trains a haiku_etp network online on a task.

    python -m experiments.train \
        --config=experiments/configs/cue_accumulation.py --workdir=/tmp/cue \
        --config.learner=es_d_rtrl --config.decay=0.9 --config.train_steps=500

Rerunning the same command on the same work directory resumes from its
newest checkpoint. The work directory gets ``metrics.jsonl``, checkpoints,
TensorBoard events (with tensorboardX) and PNG plots (with matplotlib).
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from experiments import training

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    "experiments/configs/cue_accumulation.py",
    "Training config file; override fields with --config.<field>=<value>.",
)
_WORKDIR = flags.DEFINE_string(
    "workdir", "runs/default", "Directory for checkpoints, metrics and plots."
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  common.quiet_library_logs()
  result = training.train(_CONFIG.value, _WORKDIR.value)
  metric = result.metric_name
  print(
      f"test {metric}: {result.eval_metrics[metric]:.4f}  "
      f"test loss: {result.eval_metrics['loss']:.4f}  "
      f"({result.seconds:.0f} s)\nmetrics: {result.workdir}/metrics.jsonl"
      + "".join(f"\nplot: {p}" for p in result.plots)
  )


if __name__ == "__main__":
  app.run(main)
