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
r"""Per-module table: which learners pass, which are exact, the cosines.

Every public module of ``haiku_etp`` is registered in
``haiku_etp.testing.MODULE_EXAMPLES`` with a small step that uses it. For each
entry this binary runs D-RTRL, ES-D-RTRL and RTRL
(``sequence_grad(window=...)``), the BPTT learner over the whole sequence and
truncated BPTT (``tbptt`` with the same window: the gradient without traces)
over one random sequence,
and compares their gradients with an independent whole-sequence BPTT
(``testing.bptt_grads``). A learner *passes* when every gradient leaf is
finite and non-zero somewhere and its per-step losses equal BPTT's (for
truncated BPTT, a parameter acting only on later steps may get zero). Where
``docs/design.md`` calls a learner exact on the entry (and always for BPTT
and RTRL), the table gives its largest relative error; elsewhere the cosine
similarity. It also gives the trace bytes of each online learner per
sample, and after the table the parameters for which each online learner is
approximate (those its ``haiku_etp.ApproximationWarning`` names).

    python -m experiments.modules_report --report_steps=20 \
        --report_output=/tmp/modules.json
"""

import warnings

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from experiments.benchmarks import timing
import haiku_etp
from haiku_etp import testing

_NAMES = tuple(e.name for e in testing.MODULE_EXAMPLES)

REPORT_MODULES = flags.DEFINE_list(
    "report_modules", list(_NAMES), "Registered modules to report."
)
REPORT_STEPS = flags.DEFINE_integer("report_steps", 20, "Sequence length T.")
REPORT_BATCH = flags.DEFINE_integer("report_batch", 4, "Batch size.")
REPORT_WINDOW = flags.DEFINE_integer(
    "report_window", 1, "Window of every learner's sequence_grad."
)
REPORT_FLOAT64 = flags.DEFINE_bool(
    "report_float64", True, "Compute in float64 (exactness is in float64)."
)
REPORT_OUTPUT = flags.DEFINE_string(
    "report_output", None, "Optional path of a JSON file with the rows."
)

_EXACT_TOL = 1e-8
# Learners that equal BPTT on every step.
_ALWAYS_EXACT = ("bptt", "rtrl")
_ONLINE = ("d_rtrl", "es_d_rtrl", "rtrl")


def _passes(grads, losses, reference_losses, nonzero_required) -> bool:
  leaves = jax.tree_util.tree_leaves(grads)
  finite = all(bool(np.all(np.isfinite(g))) for g in leaves)
  nonzero = not nonzero_required or all(
      bool(np.any(np.asarray(g) != 0)) for g in leaves
  )
  same_losses = np.allclose(losses, reference_losses, rtol=1e-6, atol=0)
  return finite and nonzero and same_losses


def _trace_bytes(example, name, run) -> int:
  """Bytes of the learner's traces per sample."""
  learner = testing.make_module_learner(example, name, run.model)
  with warnings.catch_warnings():
    # The row lists the approximate parameters instead.
    warnings.simplefilter("ignore", haiku_etp.ApproximationWarning)
    _, state = jax.eval_shape(learner.init, jax.random.PRNGKey(0), run.xs[0])
  return timing.nbytes(learner.traces(state)) // run.xs.shape[1]


def report_row(example, num_steps, batch_size, window, dtype) -> dict:
  """Runs one registered example; returns its row of the table."""
  run = testing.run_module_example(
      example,
      num_steps=num_steps,
      batch_size=batch_size,
      window=window,
      dtype=dtype,
  )
  compiled = haiku_etp.bptt(run.model).compile(
      run.params, run.state, None, run.xs[0]
  )
  row = {
      "module": example.name,
      "groups": [g.num_states for g in compiled.groups],
      "warnings": sorted(
          {d.code for d in compiled.diagnostics if d.level == "warning"}
      ),
      "claimed_exact": list(example.exact),
      "approximate": {k: list(v) for k, v in run.approximate.items()},
  }
  for name, grads in run.grads.items():
    err = testing.relative_error(grads, run.reference)
    row[name] = {
        "passed": _passes(
            grads,
            run.losses[name],
            run.reference_losses,
            nonzero_required=name != testing.TRUNCATED_BPTT,
        ),
        "relative_error": err,
        "cosine": testing.cosine_similarity(grads, run.reference),
        "exact": err <= _EXACT_TOL,
    }
    if name in _ONLINE:
      row[name]["trace_bytes_per_sample"] = _trace_bytes(example, name, run)
  return row


def format_table(rows) -> str:
  """A markdown table of the rows."""

  def cell(r, claimed):
    verdict = "pass" if r["passed"] else "FAIL"
    if claimed and not r["exact"]:
      return f"FAIL, claimed exact but {r['relative_error']:.1e}"
    if r["exact"]:
      return f"{verdict}, exact ({r['relative_error']:.1e})"
    return f"{verdict}, cos {r['cosine']:.4f}"

  lines = [
      "| module | S per group | D-RTRL | ES-D-RTRL | RTRL | BPTT | truncated "
      "BPTT | trace B/sample (D-RTRL / ES / RTRL) |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for row in rows:
    claimed = lambda n: n in _ALWAYS_EXACT or n in row["claimed_exact"]
    cells = [cell(row[n], claimed(n)) for n in ("d_rtrl", "es_d_rtrl", "rtrl")]
    lines.append(
        f"| {row['module']} | {row['groups']} | "
        + " | ".join(cells)
        + f" | {cell(row['bptt'], True)} | "
        f"{cell(row[testing.TRUNCATED_BPTT], False)} | "
        + " / ".join(str(row[n]["trace_bytes_per_sample"]) for n in _ONLINE)
        + " |"
    )
  return "\n".join(lines)


def format_approximate(rows) -> str:
  """Per module and online learner, the parameters it is approximate for."""
  lines = ["Approximate parameters (as ApproximationWarning names them):"]
  for row in rows:
    for name, paths in row["approximate"].items():
      lines.append(f"  {row['module']} {name}: {', '.join(paths) or '-'}")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  unknown = sorted(set(REPORT_MODULES.value) - set(_NAMES))
  if unknown:
    raise app.UsageError(f"Unknown modules {unknown}; choose from {_NAMES}.")
  if REPORT_STEPS.value < 2 or REPORT_BATCH.value < 1:
    raise app.UsageError("--report_steps must be >= 2, --report_batch >= 1.")
  if not 1 <= REPORT_WINDOW.value < REPORT_STEPS.value:
    raise app.UsageError("--report_window must be in [1, report_steps).")
  examples = {e.name: e for e in testing.MODULE_EXAMPLES}
  rows = []
  with jax.enable_x64(REPORT_FLOAT64.value):
    dtype = jnp.float64 if REPORT_FLOAT64.value else jnp.float32
    for name in REPORT_MODULES.value:
      row = report_row(
          examples[name],
          REPORT_STEPS.value,
          REPORT_BATCH.value,
          REPORT_WINDOW.value,
          dtype,
      )
      logging.info("%s: %s", name, row)
      rows.append(row)
      if REPORT_OUTPUT.value:
        common.write_json(REPORT_OUTPUT.value, {"rows": rows})
  print(format_table(rows))
  print(format_approximate(rows))


if __name__ == "__main__":
  app.run(main)
