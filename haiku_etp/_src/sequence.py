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
"""Drivers over time: whole-sequence gradients in windows, with masks."""

from typing import Any, Callable, Optional

import jax
from jax import lax
from jax import tree_util
import jax.numpy as jnp
import numpy as np


def raise_if_not_finite(tree: Any, what: str) -> None:
  """Raises ``FloatingPointError`` at run time if ``tree`` holds NaN or inf.

  Works under ``jit`` (through ``jax.debug.callback``); the
  error names the offending leaves by path. Learners call it when built with
  ``check_finite=True``.

  Args:
    tree: arrays to check; non-floating leaves are skipped.
    what: what the tree is, for the message (``"gradients"``).
  """
  check_all_finite({what: tree})


def check_all_finite(named: dict) -> None:
  """One run-time check of several trees; the first bad one is reported.

  Args:
    named: ``{what: tree}`` in the order to report.
  """
  kinds, paths, leaves = [], [], []
  for what, tree in named.items():
    for path, leaf in tree_util.tree_flatten_with_path(tree)[0]:
      if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
        kinds.append(what)
        paths.append(jax.tree_util.keystr(path) or "<root>")
        leaves.append(leaf)
  if not leaves:
    return

  def raise_if_bad(*values):
    for what in named:
      bad = [
          p
          for k, p, v in zip(kinds, paths, values)
          if k == what and not np.all(np.isfinite(v))
      ]
      if bad:
        raise FloatingPointError(
            f"Non-finite {what} (NaN or inf) at {bad[:8]}"
            + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
            + "."
        )

  jax.debug.callback(raise_if_bad, *leaves)


def _time_length(xs) -> int:
  leaves = tree_util.tree_leaves(xs)
  if not leaves:
    raise ValueError("xs has no arrays.")
  lengths = {l.shape[0] if l.ndim else None for l in leaves}
  if len(lengths) != 1 or None in lengths:
    raise ValueError(
        "xs must be time-major with one shared leading length, got leading "
        f"dims {sorted(map(str, lengths))}."
    )
  return lengths.pop()


def sequence_grad(
    learner,
    loss_fn: Callable[..., Any],
    *,
    window: Optional[int] = 1,
    reduction: str = "sum",
    has_aux: bool = False,
    axis_name: Optional[str] = None,
    check_finite: bool = False,
):
  """Builds ``fn(params, state, rng, xs, ys, mask=None)`` for a sequence.

  The sequence is cut into windows of ``window`` steps (the last one may be
  shorter) and scanned; each window contributes its window-form gradient
  (:meth:`Learner.window_grad`). For online learners the scan carries only
  the state and the summed gradients, so memory is flat in ``T``.

  Args:
    learner: a :class:`~haiku_etp.Learner`.
    loss_fn: ``loss_fn(out_t, y_t)`` returning a scalar (or ``(scalar, aux)``
      with ``has_aux``). With a per-sample ``mask`` of shape ``(T, B)`` it is
      called as ``loss_fn(out_t, y_t, mask_t)``.
    window: steps per window, ``>= 1``; ``None`` means the whole sequence
      (BPTT's default).
    reduction: ``"sum"`` of the per-step gradients, or ``"mean"`` over the
      weighted steps.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    axis_name: ``pmean`` grads and losses over this mapped axis.
    check_finite: raise ``FloatingPointError`` at run time when the inputs,
      targets, losses or gradients hold NaN or inf (a debug check; it costs a
      host round trip per call).

  Returns:
    ``fn`` returning ``(grads, state, losses)`` where ``losses`` is ``(T,)``
    (``(losses, auxes)`` with ``has_aux``); ``xs``/``ys`` are time-major
    ``(T, B, ...)``. ``mask`` is ``(T,)`` step weights (a step with weight 0
    contributes nothing) or ``(T, B)`` per-sample masks handed to
    ``loss_fn``.

  Raises:
    ValueError: for a bad window, reduction or mask shape.
  """
  if window is not None and (
      isinstance(window, bool) or not isinstance(window, int) or window < 1
  ):
    raise ValueError(f"window must be an int >= 1 or None, got {window!r}.")
  if reduction not in ("sum", "mean"):
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")

  def fn(params, state, rng, xs, ys, mask=None):
    num_steps = _time_length(xs)
    inputs = (xs, ys)
    if _time_length(ys) != num_steps:
      raise ValueError(
          f"xs has {num_steps} steps but ys has {_time_length(ys)}."
      )
    dtype = jnp.result_type(*tree_util.tree_leaves(params))
    sample_masks = None
    if mask is None:
      weights = jnp.ones((num_steps,), dtype)
    else:
      mask = jnp.asarray(mask)
      if mask.shape == (num_steps,):
        weights = mask.astype(dtype)
      elif mask.ndim == 2 and mask.shape[0] == num_steps:
        weights = jnp.ones((num_steps,), dtype)
        sample_masks = mask
      else:
        raise ValueError(
            f"mask must have shape ({num_steps},) or ({num_steps}, B), got "
            f"{mask.shape}."
        )
    rngs = None
    if rng is not None:
      rngs = jax.vmap(lambda t: jax.random.fold_in(rng, t))(
          jnp.arange(num_steps)
      )
    k = num_steps if window is None else min(window, num_steps)
    num_full, rest = divmod(num_steps, k)
    grads = tree_util.tree_map(jnp.zeros_like, params)

    def cut(tree, start, stop):
      if tree is None:
        return None
      return tree_util.tree_map(lambda v: v[start:stop], tree)

    def window_of(tree, i):
      # A dynamic slice of the closed-over sequence: reshaping it into
      # (windows, k, ...) would make XLA copy the whole sequence.
      if tree is None:
        return None
      return tree_util.tree_map(
          lambda v: lax.dynamic_slice_in_dim(v, i * k, k), tree
      )

    def run_window(state, grads, pieces):
      r, x, y, w, m = pieces
      g, state, losses, auxes = learner.window_grad(
          loss_fn, params, state, r, x, y, w, m, has_aux=has_aux
      )
      grads = tree_util.tree_map(jnp.add, grads, g)
      return state, grads, losses, auxes

    stop = num_full * k
    pieces = (rngs, xs, ys, weights, sample_masks)
    if num_full == 1:
      state, grads, losses, auxes = run_window(
          state, grads, tuple(cut(t, 0, stop) for t in pieces)
      )
    else:

      def body(carry, i):
        state, grads = carry
        state, grads, losses, auxes = run_window(
            state, grads, tuple(window_of(t, i) for t in pieces)
        )
        return (state, grads), (losses, auxes)

      (state, grads), (losses, auxes) = lax.scan(
          body, (state, grads), jnp.arange(num_full)
      )
      losses = losses.reshape(-1)
      auxes = tree_util.tree_map(
          lambda v: v.reshape((-1,) + v.shape[2:]), auxes
      )
    if rest:
      state, grads, tail_losses, tail_auxes = run_window(
          state, grads, tuple(cut(t, stop, num_steps) for t in pieces)
      )
      losses = jnp.concatenate([losses, tail_losses])
      auxes = tree_util.tree_map(
          lambda a, b: jnp.concatenate([a, b]), auxes, tail_auxes
      )
    if reduction == "mean":
      count = jnp.maximum(jnp.sum(weights), 1.0)
      grads = tree_util.tree_map(lambda g: g / count.astype(g.dtype), grads)
    if axis_name is not None:
      grads = lax.pmean(grads, axis_name)
      losses = lax.pmean(losses, axis_name)
    if check_finite:
      check_all_finite({"inputs": inputs, "losses": losses, "gradients": grads})
    return grads, state, ((losses, auxes) if has_aux else losses)

  return fn
