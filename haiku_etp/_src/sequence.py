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
from typing import Any, Callable, Optional

import jax
from jax import lax
from jax import tree_util
import jax.numpy as jnp
import numpy as np


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
  length = lengths.pop()
  if length == 0:
    raise ValueError(
        f"{name} has 0 time steps; a sequence needs at least one step."
    )
  return length


def step_rngs(rng: Any, num_steps: int) -> Any:
  """Per-step rngs ``fold_in(rng, t)`` stacked on a leading axis, or None."""
  if rng is None:
    return None
  return jax.vmap(lambda t: jax.random.fold_in(rng, t))(jnp.arange(num_steps))


def check_mask(mask: Any, num_steps: int) -> Optional[jax.Array]:
  """Validates a ``(T,)`` or ``(T, B)`` mask."""
  if mask is None:
    return None
  mask = jnp.asarray(mask)
  if mask.ndim not in (1, 2) or mask.shape[0] != num_steps:
    raise ValueError(
        f"mask must have shape ({num_steps},) or ({num_steps}, B), got "
        f"{mask.shape}."
    )
  return mask


def check_loss_takes_mask(loss_fn: Callable[..., Any]) -> None:
  """Raises a clear TypeError if ``loss_fn`` cannot take a third argument."""
  try:
    signature = inspect.signature(loss_fn)
  except (TypeError, ValueError):
    return  # Builtins and some callables have no signature; let them run.
  try:
    signature.bind(None, None, None)
  except TypeError:
    raise TypeError(
        "A mask was given, so the loss is called as loss_fn(out_t, y_t, "
        f"mask_t), but {getattr(loss_fn, '__name__', loss_fn)!r} takes "
        f"{signature}. Add a third parameter (mask_t=None) that weights the "
        "step's loss."
    ) from None


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

    def body(carry, i):
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


def scan_steps(step_fn, carry, inputs, length: int):
  """``lax.scan`` of ``step_fn``, called directly for a single step.

  A one-step window (the online rule) is the hot path; calling the step
  directly keeps XLA from wrapping it in a loop.
  """
  if length == 1:
    first = tree_util.tree_map(lambda v: v[0], inputs)
    carry, out = step_fn(carry, first)
    return carry, tree_util.tree_map(lambda v: v[None], out)
  return lax.scan(step_fn, carry, inputs)


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
