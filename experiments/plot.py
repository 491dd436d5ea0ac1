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
r"""Draws the learning curves of one or more runs.

    python -m experiments.plot --workdirs=runs/d_rtrl,runs/bptt \
        --output=runs/curves.png

Loss and metric against step and wall time, one line per run and split,
labelled by learner.
"""

from absl import app
from absl import flags

from experiments import plotting

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Run directories to overlay.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "PNG path (default: curves.png in the first run)."
)
_METRIC = flags.DEFINE_string(
    "metric", None, "Metric to plot beside the loss (default: the task's)."
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _WORKDIRS.value:
    raise app.UsageError("--workdirs is required.")
  output = _OUTPUT.value or f"{_WORKDIRS.value[0]}/{plotting.CURVES_FILE}"
  print(plotting.plot_curves(_WORKDIRS.value, output, _METRIC.value))


if __name__ == "__main__":
  app.run(main)
