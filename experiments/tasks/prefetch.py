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
"""Produces the next batches in a background thread while the consumer works.

    for batch in prefetch(task.batch(train_seed(0, s), 32) for s in steps):
      ...

The producer is a daemon thread, so it never keeps the interpreter alive; it
stops after the last item, or within a few milliseconds of ``close()`` (also
called on exhaustion, on an error, by the context manager and when the
prefetcher is garbage collected), unless it is inside a slow ``next()`` of the
source, which it finishes first. An exception raised by the source is
re-raised by the consumer's ``next()``, with its traceback.
"""

import itertools
import queue
import threading
from typing import Any, Iterable, NamedTuple

_END = object()
_POLL_S = 0.02
_COUNTER = itertools.count()


class _Failure(NamedTuple):
  error: BaseException


def _put(q, item, stop):
  """Puts ``item`` unless ``stop`` is set first; returns whether it did."""
  while not stop.is_set():
    try:
      q.put(item, timeout=_POLL_S)
      return True
    except queue.Full:
      continue
  return False


def _produce(iterator, q, stop):
  # Holds no reference to the Prefetcher, so that it can be collected.
  try:
    for item in iterator:
      if not _put(q, item, stop):
        return
  except BaseException as e:  # pylint: disable=broad-except
    _put(q, _Failure(e), stop)
    return
  _put(q, _END, stop)


class Prefetcher:
  """Iterator over ``iterable`` whose items are produced ahead in a thread.

  Create it with ``prefetch``.
  """

  def __init__(self, iterable: Iterable[Any], size: int):
    self._queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._done = False
    self._thread = threading.Thread(
        target=_produce,
        args=(iter(iterable), self._queue, self._stop),
        name=f"prefetch-{next(_COUNTER)}",
        daemon=True,
    )
    self._thread.start()

  def __iter__(self):
    return self

  def __next__(self):
    if self._done:
      raise StopIteration
    item = self._queue.get()
    if item is _END:
      self._done = True
      self._thread.join()
      raise StopIteration
    if isinstance(item, _Failure):
      self.close()
      raise item.error
    return item

  def close(self, timeout: float = 1.0) -> bool:
    """Stops the producer and waits for it up to ``timeout`` seconds.

    Args:
      timeout: Longest wait, in seconds.

    Returns:
      Whether the producer thread has ended.
    """
    self._done = True
    self._stop.set()
    while True:
      try:
        self._queue.get_nowait()
      except queue.Empty:
        break
    self._thread.join(timeout)
    return not self._thread.is_alive()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __del__(self):
    self._stop.set()


def prefetch(iterable: Iterable[Any], size: int = 2) -> Prefetcher:
  """Iterates over ``iterable`` with up to ``size`` items produced ahead.

  Args:
    iterable: The source; it is consumed in a background thread.
    size: Number of items buffered ahead of the consumer, at least 1.

  Returns:
    A ``Prefetcher``: an iterator yielding the items of ``iterable`` in order,
    with ``close()`` and context-manager support.

  Raises:
    TypeError: If ``size`` is not an integer.
    ValueError: If ``size < 1``.
  """
  if isinstance(size, bool) or not isinstance(size, int):
    raise TypeError(
        f"prefetch: size must be an integer >= 1, got {size!r} of type "
        f"{type(size).__name__}."
    )
  if size < 1:
    raise ValueError(
        f"prefetch: size must be >= 1 (items buffered ahead), got {size}."
    )
  return Prefetcher(iterable, size)
