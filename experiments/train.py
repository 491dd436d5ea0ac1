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
newest checkpoint (a damaged one is set aside for the previous one; a
changed config that shapes the train state is an error naming the field),
and a finished run prints its result again. The work directory (relative
or absolute) gets ``metrics.jsonl``, checkpoints, TensorBoard events (with
tensorboardX) and PNG plots (with matplotlib). A mistake the user can mend
(a bad config or work directory, a diverged run, unreadable checkpoints)
ends the binary with one ``error:`` line and exit status 1.

Several processes (hosts): start the same command once per process with
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` (or
the environment variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``
and ``JAX_PROCESS_ID``); each process loads only its share of every global
batch and process 0 alone logs, writes metrics and plots. On a cluster that
JAX detects by itself (SLURM, Open MPI, Cloud TPU), ``--distributed`` with
no address initializes from the environment.
"""

import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from experiments import checkpoints
from experiments import common
from experiments import distributed
from experiments import training

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    "experiments/configs/cue_accumulation.py",
    "Training config file; override fields with --config.<field>=<value>.",
)
_WORKDIR = flags.DEFINE_string(
    "workdir", "runs/default", "Directory for checkpoints, metrics and plots."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "HOST:PORT of process 0's coordinator for a run on several processes "
    "(default: $JAX_COORDINATOR_ADDRESS).",
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes of the run (default: $JAX_NUM_PROCESSES)."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id",
    None,
    "This process's index in [0, num_processes) (default: $JAX_PROCESS_ID).",
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Initialize JAX's distributed runtime even without an address, from a "
    "cluster environment JAX detects (SLURM, Open MPI, Cloud TPU).",
)
_INIT_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout",
    300,
    "Seconds to wait for every process to join the coordinator.",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = common.flag_config(_CONFIG)  # an unreadable file: one line
  common.quiet_library_logs()
  common.keep_freed_memory()
  distributed.initialize(
      _COORDINATOR.value,
      _NUM_PROCESSES.value,
      _PROCESS_ID.value,
      distributed=_DISTRIBUTED.value,
      timeout_s=_INIT_TIMEOUT.value,
  )
  if jax.process_index() != 0:
    # Process 0 alone reports; the others only say what goes wrong.
    logging.set_verbosity(logging.WARNING)
  try:
    result = training.train(config, _WORKDIR.value)
  except (
      training.ConfigError,
      training.Diverged,
      checkpoints.CheckpointError,
  ) as e:
    # What the user can mend gets one line, not a traceback.
    sys.exit(f"error: {e}")
  if jax.process_index() != 0:
    return
  metric = result.metric_name
  print(
      f"test {metric}: {result.eval_metrics[metric]:.4f}  "
      f"test loss: {result.eval_metrics['loss']:.4f}  "
      f"({result.seconds:.0f} s)\nmetrics: {result.workdir}/metrics.jsonl"
      + "".join(f"\nplot: {p}" for p in result.plots)
  )


if __name__ == "__main__":
  app.run(main)
