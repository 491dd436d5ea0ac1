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
"""The fields every training config has, with their defaults."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """A config with every field of ``experiments.training``; tasks fill in
  ``task`` and ``model`` and override the rest."""
  config = ml_collections.ConfigDict()
  config.task = ml_collections.ConfigDict({"name": ""})
  config.model = ml_collections.ConfigDict({"kind": "", "hidden_size": 1})
  config.learner = "d_rtrl"
  # ES-D-RTRL's (alpha_x, alpha_f); a float sets both.
  config.decay = 0.0
  # ES-D-RTRL's form: "window" or "fused" (one contraction per step; needs
  # window = 1).
  config.es_form = "window"
  # RTRL: the largest influence traces, and the parameters whose full
  # influence it keeps (paths "module/name"; empty: every one).
  config.max_trace_bytes = 1 << 30
  config.rtrl_params = ()
  # SnAp-n's n (max_trace_bytes bounds its stored entries too).
  config.snap_n = 1
  # e-prop's feedback ("symmetric", "random", "adaptive"), the seed of the
  # random feedback matrix (e-prop and RFLO) and the adaptive relaxation.
  config.feedback = "symmetric"
  config.feedback_seed = 0
  config.feedback_rate = 1e-3
  # The dtype the online learners store their traces in between steps
  # ("bfloat16", "float16"); "": the parameters' dtype.
  config.trace_dtype = ""
  # BPTT's gradient checkpointing: "" (none), "sqrt" (segments of
  # ceil(sqrt(T)) steps) or a number of steps per segment.
  config.remat = ""
  # Steps per gradient window (sequence_grad's window): 1 is the online rule,
  # tbptt truncates here; 0 picks it: 32 steps for the online learners and
  # tbptt (the traces roll once per window, memory stays flat in T), 1 for a
  # fused form (experiments.training.learner_window).
  config.window = 0
  # Optimizer updates inside a sequence every this many steps; 0: once per
  # sequence, after its last step.
  config.update_every = 0
  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.clip_norm = 0.0
  config.batch_size = 64
  config.train_steps = 500
  config.eval_every = 100
  config.eval_batches = 8
  config.log_every = 20
  config.checkpoint_every = 100
  config.keep_checkpoints = 3
  config.seed = 0
  # A NaN or infinite loss or gradient norm: "stop" the run (the last good
  # checkpoint is kept) or "skip" that update and count it.
  config.on_nonfinite = "stop"
  config.parallel = "pmap"
  # Devices to train on; 0 uses all of them.
  config.num_devices = 0
  return config
