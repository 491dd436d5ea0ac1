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
"""Drivers over time: windows scanned over a sequence, masks, finite checks.

Nothing here knows the learners: :func:`scan_windows` takes any window
function, so data flows one way (ops, compiler, learners, drivers).
"""

import inspect
import math
from typing import Any, Callable, Optional

import jax
from jax import lax
from jax import tree_util
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.core import checks


def time_length(xs: Any, name: str = "xs") -> int:
  """The shared leading (time) length of the leaves of ``xs``.

  Raises:
    ValueError: for no arrays, a scalar leaf, unequal lengths or ``T = 0``.
  """
  leaves = tree_util.tree_leaves(xs)
  if not leaves:
    raise ValueError(f"{name} has no arrays.")
  lengths = {np.shape(l)[0] if np.ndim(l) else None for l in leaves}
  if len(lengths) != 1 or None in lengths:
    raise ValueError(
        f"{name} must be time-major with one shared leading length, got "
        f"leading dims {sorted(map(str, lengths))}."
    )
  length: int = lengths.pop()  # type: ignore[assignment]  # None is refused above
  if length == 0:
    raise ValueError(
        f"{name} has 0 time steps; a sequence needs at least one step."
    )
  return length


def first_step(tree: Any) -> Any:
  """Step 0 of a time-leading tree (``None`` stays ``None``)."""
  return None if tree is None else tree_util.tree_map(lambda v: v[0], tree)


def step_rngs(rng: Any, num_steps: int) -> Any:
  """Per-step rngs ``fold_in(rng, t)`` stacked on a leading axis, or None."""
  if rng is None:
    return None
  return jax.vmap(lambda t: jax.random.fold_in(rng, t))(jnp.arange(num_steps))


def batch_size(x: Any, axis: int = 0) -> Optional[int]:
  """The shared size of axis ``axis`` of the leaves of ``x`` that have it.

  ``None`` when no leaf has the axis or the leaves disagree (an input that
  is not batched along ``axis``); the model's own checks then apply.
  """
  sizes = {
      np.shape(l)[axis] for l in tree_util.tree_leaves(x) if np.ndim(l) > axis
  }
  return sizes.pop() if len(sizes) == 1 else None


def check_batch(tree: Any, batch: Optional[int], name: str, axis: int) -> None:
  """Raises ``ValueError`` for a leaf of ``tree`` whose batch axis is not
  ``batch``.

  Leaves without the axis (a scalar per step, a ``(T,)`` target shared by
  the batch) are let through.
  """
  if batch is None:
    return
  lead = "(T, B, ...)" if axis == 1 else "(B, ...)"
  for path, leaf in tree_util.tree_flatten_with_path(tree)[0]:
    if np.ndim(leaf) > axis:
      checks.assert_axis_dimension(
          leaf,
          axis,
          batch,
          custom_message=(
              f"{name}{tree_util.keystr(path)} has shape {np.shape(leaf)}, "
              f"but the inputs have batch {batch}: {name} must be {lead} like "
              f"the inputs (B = {batch} along axis {axis})."
          ),
      )


def check_mask(
    mask: Any, num_steps: int, batch: Optional[int] = None
) -> Optional[jax.Array]:
  """Validates a ``(T,)`` or ``(T, B)`` mask."""
  if mask is None:
    return None
  mask = jnp.asarray(mask)
  want = f"({num_steps},) or ({num_steps}, {'B' if batch is None else batch})"
  message = f"mask must have shape {want}, got {mask.shape}."
  checks.assert_rank(mask, {1, 2}, custom_message=message)
  checks.assert_shape(
      mask,
      (num_steps,) if mask.ndim == 1 else (num_steps, batch),
      custom_message=message,
  )
  return mask


def check_loss_signature(loss_fn: Callable[..., Any]) -> None:
  """Raises ``TypeError`` unless ``loss_fn`` can be called with two
  arguments: the learners apply masks themselves."""
  if not callable(loss_fn):
    raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}.")
  try:
    signature = inspect.signature(loss_fn)
  except (TypeError, ValueError):
    return  # Builtins and some callables have no signature; let them run.
  try:
    signature.bind(None, None)
  except TypeError:
    raise TypeError(
        f"loss_fn {getattr(loss_fn, '__name__', loss_fn)!r} takes "
        f"{signature}, but it is called as loss_fn(out_t, y_t): the learner "
        "applies the mask itself. Drop the mask parameter and return the "
        "per-sample losses, shape (B,), or a scalar."
    ) from None


def step_loss(loss: jax.Array, mask_t: Optional[jax.Array]) -> jax.Array:
  """One step's loss from ``loss_fn``'s scalar or per-sample losses.

  Per-sample losses ``(B,)`` are averaged over the batch; a step mask
  (a scalar ``mask_t``) scales the step, a per-sample mask (``(B,)``)
  weights each sample: ``sum_b mask_t[b] * loss[b] / B``.

  Raises:
    ValueError: for a loss of rank 2 or more, a per-sample mask with a
      scalar loss, or per-sample losses of another batch than the mask.
  """
  loss = jnp.asarray(loss)
  checks.assert_rank(
      loss,
      {0, 1},
      custom_message=(
          "loss_fn must return a scalar or per-sample losses of shape (B,), "
          f"got shape {loss.shape}."
      ),
  )
  if mask_t is None:
    return jnp.mean(loss)
  mask_t = jnp.asarray(mask_t).astype(loss.dtype)
  if mask_t.ndim == 0:
    return mask_t * jnp.mean(loss)
  got = "a scalar" if loss.ndim == 0 else f"shape {loss.shape}"
  checks.assert_shape(
      loss,
      mask_t.shape,
      custom_message=(
          f"The mask weights each sample (mask_t has shape {mask_t.shape}), "
          f"so loss_fn must return per-sample losses of shape "
          f"{mask_t.shape}, got {got}. Return the losses before the batch "
          "mean, or pass a (T,) mask."
      ),
  )
  return jnp.sum(mask_t * loss) / loss.shape[0]


def mean_count(
    mask: Optional[jax.Array], num_steps: int, dtype: Any
) -> jax.Array:
  """What ``reduction="mean"`` divides by: the unmasked steps.

  ``T`` without a mask, ``sum_t mask[t]`` for a ``(T,)`` mask and
  ``sum_{t,b} mask[t, b] / B`` for a ``(T, B)`` mask (a step counts by the
  share of its samples that are unmasked); 1 for an all-zero mask, whose
  gradients are zero.
  """
  if mask is None:
    return jnp.asarray(num_steps, dtype)
  mask = mask.astype(dtype)
  count = jnp.sum(mask) / (1 if mask.ndim == 1 else mask.shape[1])
  return jnp.where(count > 0, count, jnp.ones((), dtype))


def scan_windows(
    window_fn: Callable[[Any, Any], tuple[Any, Any]],
    carry: Any,
    inputs: Any,
    num_steps: int,
    window: int,
) -> tuple[Any, Any]:
  """Runs ``window_fn`` over consecutive windows of ``inputs``.

  The sequence is cut into windows of ``window`` steps (the last one may be
  shorter). Full windows are scanned over dynamic slices of the closed-over
  sequence (reshaping it into ``(windows, k, ...)`` would make XLA copy it),
  so only the carry lives across windows and memory is flat in ``T``.

  Args:
    window_fn: ``window_fn(carry, window_inputs) -> (carry, outs)`` where
      every leaf of ``window_inputs`` and ``outs`` has a leading axis of the
      window's length.
    carry: the initial carry.
    inputs: time-major leaves (``None`` leaves are passed through).
    num_steps: ``T``.
    window: steps per window, ``1 <= window``.

  Returns:
    ``(carry, outs)`` with the windows' outputs concatenated over time.
  """
  k = min(window, num_steps)
  num_full, rest = divmod(num_steps, k)
  cut = lambda start, stop: tree_util.tree_map(lambda v: v[start:stop], inputs)
  if num_full == 1:
    carry, outs = window_fn(carry, cut(0, k))
  else:

    def body(carry, i: jax.Array):
      piece = tree_util.tree_map(
          lambda v: lax.dynamic_slice_in_dim(v, i * k, k), inputs
      )
      return window_fn(carry, piece)

    carry, outs = lax.scan(body, carry, jnp.arange(num_full))
    outs = tree_util.tree_map(lambda v: v.reshape((-1,) + v.shape[2:]), outs)
  if rest:
    carry, tail = window_fn(carry, cut(num_full * k, num_steps))
    outs = tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), outs, tail)
  return carry, outs


def scan_steps(step_fn, carry, inputs: Any, length: int):
  """``lax.scan`` of ``step_fn``, called directly for a single step.

  A one-step window (the online rule) is the hot path; calling the step
  directly keeps XLA from wrapping it in a loop.
  """
  if length == 1:
    first = tree_util.tree_map(lambda v: v[0], inputs)
    carry, out = step_fn(carry, first)
    return carry, tree_util.tree_map(lambda v: v[None], out)
  return lax.scan(step_fn, carry, inputs)


def remat_segment(remat, length: int) -> int:
  """Steps per checkpointed segment: ``remat`` itself (an int), or
  ``ceil(sqrt(length))`` for ``"sqrt"`` (and ``True``)."""
  if remat is True or remat == "sqrt":
    return max(1, math.ceil(math.sqrt(length)))
  return int(remat)


def check_remat(remat):
  """``remat`` if it is ``None``, ``True``, ``"sqrt"`` or an int >= 1."""
  ok = (
      remat is None
      or remat is True
      or remat == "sqrt"
      or (isinstance(remat, int) and not isinstance(remat, bool) and remat > 0)
  )
  if not ok:
    raise ValueError(
        "remat must be None (store every step), 'sqrt' (or True: segments "
        "of ceil(sqrt(T)) steps) or an int >= 1 (steps per segment), got "
        f"{remat!r}."
    )
  return remat


def scan_remat(step_fn, carry, inputs: Any, length: int, segment: int):
  """:func:`scan_steps` with the steps grouped into segments of ``segment``
  steps, each under ``jax.checkpoint``: differentiated, only the carries
  at segment boundaries are stored and each segment's forward pass is
  recomputed in the backward pass (memory ``O(T / s + s)`` steps instead of
  ``O(T)``). A last, shorter segment takes the remainder. The values are
  those of :func:`scan_steps`.
  """
  segment = min(segment, length)
  if segment >= length:
    return jax.checkpoint(
        lambda c, i: scan_steps(step_fn, c, i, length), prevent_cse=False
    )(carry, inputs)
  whole, rest = divmod(length, segment)
  head = tree_util.tree_map(
      lambda v: v[: whole * segment].reshape((whole, segment) + v.shape[1:]),
      inputs,
  )
  body = jax.checkpoint(
      lambda c, i: scan_steps(step_fn, c, i, segment), prevent_cse=False
  )
  carry, outs = lax.scan(body, carry, head)
  outs = tree_util.tree_map(
      lambda v: v.reshape((whole * segment,) + v.shape[2:]), outs
  )
  if rest:
    tail = tree_util.tree_map(lambda v: v[whole * segment :], inputs)
    carry, more = jax.checkpoint(
        lambda c, i: scan_steps(step_fn, c, i, rest), prevent_cse=False
    )(carry, tail)
    outs = tree_util.tree_map(
        lambda a, b: jnp.concatenate([a, b], axis=0), outs, more
    )
  return carry, outs


def _named_leaves(named: dict):
  for role, tree in named.items():
    for path, leaf in tree_util.tree_flatten_with_path(tree)[0]:
      if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
        yield role + tree_util.keystr(path), leaf


def _raise_bad(names, flags) -> None:
  bad = [n for n, ok in zip(names, flags) if not ok]
  if bad:
    raise FloatingPointError(
        f"Non-finite values (NaN or inf) in {', '.join(bad[:8])}"
        + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        + "."
    )


def finite_flags(named: dict) -> tuple[list, list]:
  """Leaf names (role and path) and per-leaf all-finite flags of ``named``."""
  names, flags = [], []
  for name, leaf in _named_leaves(named):
    names.append(name)
    flags.append(jnp.all(jnp.isfinite(leaf)))
  return names, flags


def raise_if_not_finite(tree: Any, what: str) -> None:
  """Raises ``FloatingPointError`` if ``tree`` holds NaN or inf.

  Called on concrete arrays it raises at once. Inside a traced function
  (``jit``, ``pmap``) the check runs through ``jax.debug.callback``: the
  runtime then raises its own error type, whose message carries the
  ``FloatingPointError`` text.

  Args:
    tree: arrays to check; non-floating leaves are skipped.
    what: what the tree is, prefixed to each leaf's path in the message
      (``"grads"`` gives ``grads['linear']['w']``).
  """
  names, flags = finite_flags({what: tree})
  if not flags:
    return
  if any(isinstance(f, jax.core.Tracer) for f in flags):
    jax.debug.callback(lambda *fs: _raise_bad(names, fs), *flags)
  else:
    _raise_bad(names, [bool(f) for f in flags])


def checked(fn: Callable[..., Any], roles: Callable[..., dict]) -> Callable:
  """Wraps ``fn`` to raise ``FloatingPointError`` on non-finite values.

  Called with concrete arrays, the wrapper runs ``fn`` under ``jit`` together
  with one all-finite flag per leaf of ``roles(args, result)`` and raises
  after the call returns, naming the leaves. Called inside a traced function,
  it checks through :func:`raise_if_not_finite`.
  """

  def with_flags(*args):
    result = fn(*args)
    return result, finite_flags(roles(args, result))[1]

  compiled = jax.jit(with_flags)

  def wrapper(*args):
    traced = any(
        isinstance(l, jax.core.Tracer) for l in tree_util.tree_leaves(args)
    )
    if traced:
      result = fn(*args)
      for role, tree in roles(args, result).items():
        raise_if_not_finite(tree, role)
      return result
    result, flags = compiled(*args)
    names = [n for n, _ in _named_leaves(roles(args, result))]
    _raise_bad(names, [bool(f) for f in flags])
    return result

  return wrapper
