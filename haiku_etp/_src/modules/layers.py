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
"""Feed-forward Haiku layers routed through the ETP ops.

``Linear`` and ``ConvND`` (with ``Conv1D``, ``Conv2D`` and ``Conv3D``) take the
arguments of ``hk.Linear`` and ``hk.ConvND`` and create the same parameters
(names, shapes, default initialisers), so a checkpoint of a Haiku model loads
into the ETP model and gives the same outputs. The difference is that the
weights go through :func:`haiku_etp.dense` and :func:`haiku_etp.conv`, which
the compiler reads as trainable relations.
"""

import math
import operator
from typing import Any, Callable, Optional, Sequence, Union, cast

import haiku as hk
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from haiku_etp._src.core import checks
from haiku_etp._src.ops import conv as conv_lib
from haiku_etp._src.ops import dense as dense_lib
from haiku_etp._src.ops import embedding as embedding_lib
from haiku_etp._src.ops import sparse as sparse_lib

PadFn = Callable[[int], Sequence[int]]
Padding = Union[str, Sequence[tuple[int, int]], PadFn, Sequence[PadFn]]


def fan_in_init(fan_in: float) -> hk.initializers.Initializer:
  """Haiku's default weight initialiser: truncated normal, std ``1/sqrt(n)``."""
  return hk.initializers.TruncatedNormal(stddev=1.0 / math.sqrt(fan_in))


def _index(value: Any) -> int:
  """``value`` as an int if it is an integer (Python or NumPy), not a bool."""
  if isinstance(value, bool):
    raise TypeError(value)
  return operator.index(value)


def replicate(
    value: Union[int, Sequence[int]], n: int, what: str
) -> tuple[int, ...]:
  """An int-or-sequence argument as a tuple of ``n`` positive ints."""
  try:
    try:
      value = (_index(value),) * n
    except TypeError:
      # Not an integer: a sequence, or a TypeError below.
      value = tuple(_index(v) for v in cast(Sequence[int], value))
  except TypeError:
    raise ValueError(
        f"{what} must be an int or a sequence of {n} ints, got {value!r}."
    ) from None
  if len(value) != n or any(v <= 0 for v in value):
    raise ValueError(
        f"{what} must be a positive int or a sequence of {n} positive ints, "
        f"got {value!r}."
    )
  return value


def check_positive(value: Any, what: str) -> int:
  """``value`` as a positive Python int (NumPy integers accepted)."""
  try:
    number = _index(value)
  except TypeError:
    number = 0
  if number <= 0:
    raise ValueError(f"{what} must be a positive int, got {value!r}.")
  return number


def channel_index(data_format: str, num_spatial_dims: int) -> int:
  """Channel axis (0 = first after batch, ``-1`` = last) of a data format.

  Accepts ``"channels_last"``, ``"channels_first"`` and layout strings such
  as ``"NWC"``, ``"NCHW"`` or ``"NDHWC"`` of rank ``num_spatial_dims + 2``.

  Raises:
    ValueError: for any other value.
  """
  if data_format == "channels_last":
    return -1
  if data_format == "channels_first":
    return 1
  if (
      isinstance(data_format, str)
      and len(data_format) == num_spatial_dims + 2
      and len(set(data_format)) == len(data_format)
      and data_format.startswith("N")
  ):
    if data_format.endswith("C"):
      return -1
    if data_format[1] == "C":
      return 1
  raise ValueError(
      f"Unknown data_format {data_format!r} for a {num_spatial_dims}-D "
      "convolution: use 'channels_last', 'channels_first' or a layout such "
      "as 'N...C' / 'NC...' of rank num_spatial_dims + 2."
  )


def dimension_numbers(
    num_spatial_dims: int, channels_last: bool
) -> lax.ConvDimensionNumbers:
  """Input/output layout by channel position; kernels are ``(*k, I, O)``."""
  n = num_spatial_dims
  if channels_last:
    io_spec = (0, n + 1) + tuple(range(1, n + 1))
  else:
    io_spec = (0, 1) + tuple(range(2, n + 2))
  kernel_spec = (n + 1, n) + tuple(range(n))
  return lax.ConvDimensionNumbers(io_spec, kernel_spec, io_spec)


def _padding(
    padding: Padding, kernel_shape: Sequence[int], rate: Sequence[int], n: int
):
  """A padding string or ``n`` pairs; pad functions see the dilated size.

  Raises:
    ValueError: for an unknown string, pairs of the wrong number or a
      wrong number of pad functions (in the constructor, not at call time).
  """
  fns = padding
  if callable(fns):
    fns = (fns,) * n
  if isinstance(fns, Sequence) and fns and all(callable(f) for f in fns):
    if len(fns) != n:
      raise ValueError(
          f"padding needs {n} pad functions, got {len(fns)}: {padding!r}."
      )
    pad_fns = cast(Sequence[PadFn], fns)  # every one callable
    return tuple(
        tuple(int(p) for p in f((k - 1) * r + 1))
        for f, k, r in zip(pad_fns, kernel_shape, rate)
    )
  # No pad functions: a string or (low, high) pairs, or an error there.
  return conv_lib.normalise_padding(cast(conv_lib.Padding, padding), n)


def as_floating(inputs: Any) -> jax.Array:
  """``inputs`` as an array; integer and boolean inputs (spikes) are cast.

  They take JAX's default floating dtype (float32, or float64 under
  ``jax_enable_x64``), which the layer's parameters then share.
  """
  inputs = jnp.asarray(inputs)
  if not jnp.issubdtype(inputs.dtype, jnp.inexact):
    inputs = inputs.astype(jnp.result_type(float))
  return inputs


def _part_size(total: int, num: int, what: str) -> int:
  if not isinstance(num, int) or num <= 0 or total % num:
    raise ValueError(
        f"num must be a positive divisor of {what} {total}, got {num!r}."
    )
  return total // num


def _part(b: Optional[jax.Array], k: int, size: int) -> Optional[jax.Array]:
  return None if b is None else b[k * size : (k + 1) * size]


class Linear(hk.Module):
  r"""Affine layer :math:`y = x W + b` through :func:`haiku_etp.dense`.

  A drop-in replacement for ``hk.Linear``: parameters ``w`` of shape
  ``(input_size, output_size)`` and ``b`` of shape ``(output_size,)``, with
  Haiku's default initialisers. Inputs of rank 1 (unbatched) and 2 use the
  dense op; inputs of higher rank ``(B, *positions, input_size)`` are mapped
  position by position as a convolution with a size-1 kernel, so the
  eligibility traces keep one slot per position, as they must for
  exactness. Integer and boolean inputs (spikes) are cast to JAX's default
  floating dtype, which the parameters take.

  With a ``mask`` (as ``hk.ConvND`` has) only the weights where it is
  nonzero act: inputs of rank 1 and 2 go through :func:`haiku_etp.sparse`
  on the weights gathered at the mask's synapses, so the traces hold one
  entry per synapse (D-RTRL ``(B, nnz, S)``) and the gradient of ``w`` is
  zero off the mask; ``w`` keeps its dense shape. Inputs of higher rank use
  ``w * mask``.

  >>> import haiku as hk, jax, jax.numpy as jnp
  >>> f = hk.transform(lambda x: Linear(4)(x))
  >>> params = f.init(jax.random.PRNGKey(0), jnp.ones((2, 3)))
  >>> f.apply(params, None, jnp.ones((2, 3))).shape
  (2, 4)
  """

  def __init__(
      self,
      output_size: int,
      with_bias: bool = True,
      w_init: Optional[hk.initializers.Initializer] = None,
      b_init: Optional[hk.initializers.Initializer] = None,
      mask: Optional[Any] = None,
      max_events: Optional[int] = None,
      name: Optional[str] = None,
  ):
    """Constructs the layer.

    Args:
      output_size: number of output features.
      with_bias: whether to add a bias.
      w_init: weight initialiser; truncated normal with std
        ``1/sqrt(input_size)`` by default.
      b_init: bias initialiser; zeros by default.
      mask: optional concrete ``(input_size, output_size)`` array (NumPy or
        a constant): the structural connectivity, nonzero where a weight
        exists.
      max_events: ``None``, or an event-driven forward pass for inputs that
        are mostly zeros (spikes): see :func:`haiku_etp.dense`.
      name: module name.

    Raises:
      ValueError: if ``output_size`` is not a positive int, ``mask`` is not
        a concrete rank-2 array or ``max_events`` not a positive int.
    """
    super().__init__(name=name)
    self.output_size = check_positive(output_size, "output_size")
    self.with_bias = with_bias
    self.w_init = w_init
    self.b_init = b_init or jnp.zeros
    self.mask, self.connectivity = None, None
    if mask is not None:
      self.connectivity = sparse_lib.Connectivity.from_mask(mask)
      self.mask = self.connectivity.mask()
      if self.mask.shape[1] != self.output_size:
        raise ValueError(
            f"mask of Linear must have shape (input_size, "
            f"{self.output_size}), got {self.mask.shape}."
        )
    if max_events is not None:
      max_events = check_positive(max_events, "max_events")
    self.max_events = max_events

  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Applies the layer to ``(..., input_size)`` inputs.

    Raises:
      ValueError: for a scalar input, or a mask whose first axis is not the
        input size.
    """
    inputs, w, b = self._params(inputs)
    return self._apply(inputs, w, b, self.mask, self.connectivity)

  def split(self, inputs: jax.Array, num: int) -> tuple[jax.Array, ...]:
    """``jnp.split(self(inputs), num, -1)``, one ETP op per part.

    Each part is computed from its own slice of ``w`` and ``b``, so the
    compiler sees one relation per part. Recurrent cells use this to feed
    each gate from its own relation, aligned with the hidden state.

    Args:
      inputs: as for ``__call__``.
      num: number of equal parts; must divide ``output_size``.

    Returns:
      ``num`` arrays of ``output_size // num`` features each.

    Raises:
      ValueError: if ``num`` does not divide ``output_size``.
    """
    size = _part_size(self.output_size, num, "output_size")
    inputs, w, b = self._params(inputs)
    cut = lambda a, k: None if a is None else a[:, k * size : (k + 1) * size]
    return tuple(
        self._apply(
            inputs,
            w[:, k * size : (k + 1) * size],
            _part(b, k, size),
            cut(self.mask, k),
            None
            if self.mask is None
            else sparse_lib.Connectivity.from_mask(cut(self.mask, k)),
        )
        for k in range(num)
    )

  def _params(self, inputs: jax.Array):
    inputs = as_floating(inputs)
    if inputs.ndim < 1:
      raise ValueError(
          "Input to Linear must have rank >= 1, got shape "
          f"{tuple(inputs.shape)}."
      )
    input_size = inputs.shape[-1]
    if self.mask is not None and self.mask.shape[0] != input_size:
      raise ValueError(
          f"mask of Linear must have shape ({input_size}, "
          f"{self.output_size}) for inputs of {input_size} features, got "
          f"{self.mask.shape}."
      )
    w_init = self.w_init or fan_in_init(input_size)
    w = hk.get_parameter(
        "w", (input_size, self.output_size), inputs.dtype, init=w_init
    )
    b = None
    if self.with_bias:
      b = hk.get_parameter(
          "b", (self.output_size,), inputs.dtype, init=self.b_init
      )
    return inputs, w, b

  def _apply(
      self,
      inputs: jax.Array,
      w: jax.Array,
      b: Optional[jax.Array],
      mask: Optional[np.ndarray],
      c: Optional[sparse_lib.Connectivity],
  ):
    if inputs.ndim <= 2:
      if c is not None:
        return sparse_lib.sparse(
            inputs,
            w[c.rows, c.cols],
            c,
            b,
            max_events=self.max_events,
        )
      return dense_lib.dense(inputs, w, b, max_events=self.max_events)
    if mask is not None:
      w = w * mask.astype(w.dtype)
    n = inputs.ndim - 2
    kernel = jnp.reshape(w, (1,) * n + w.shape)
    return conv_lib.conv(
        inputs,
        kernel,
        b,
        padding="VALID",
        dimension_numbers=dimension_numbers(n, channels_last=True),
    )


class SparseLinear(hk.Module):
  r"""Affine layer on a sparse connectivity, through :func:`haiku_etp.sparse`.

  The weights exist only on the synapses of ``connectivity`` (a
  :class:`haiku_etp.Connectivity` of shape ``(input_size, output_size)``):
  the parameter ``w`` is ``(nnz,)``, in the connectivity's order, and
  nothing of size ``input_size x output_size`` is ever formed, so that
  networks of ``10^5`` neurons at 1% connectivity fit. D-RTRL's traces are
  ``(B, nnz, S)``. ``w`` is initialised with a truncated normal of std
  ``1/sqrt(nnz / output_size)`` (the mean fan-in) by default.

  >>> import haiku as hk, jax, jax.numpy as jnp
  >>> from haiku_etp import Connectivity
  >>> c = Connectivity.random((100, 50), 0.1)
  >>> f = hk.transform(lambda x: SparseLinear(c)(x))
  >>> params = f.init(jax.random.PRNGKey(0), jnp.ones((2, 100)))
  >>> params["sparse_linear"]["w"].shape == (c.nnz,)
  True
  """

  def __init__(
      self,
      connectivity: Any,
      with_bias: bool = True,
      w_init: Optional[hk.initializers.Initializer] = None,
      b_init: Optional[hk.initializers.Initializer] = None,
      max_events: Optional[int] = None,
      name: Optional[str] = None,
  ):
    """Constructs the layer.

    Args:
      connectivity: a :class:`haiku_etp.Connectivity`.
      with_bias: whether to add a bias of ``(output_size,)``.
      w_init: initialiser of the ``(nnz,)`` weights.
      b_init: bias initialiser; zeros by default.
      max_events: ``None``, or an event-driven sum for inputs that are
        mostly zeros (spikes): see :func:`haiku_etp.sparse`.
      name: module name.

    Raises:
      ValueError: if ``connectivity`` is not a ``Connectivity`` or
        ``max_events`` not a positive int.
    """
    super().__init__(name=name)
    if not isinstance(connectivity, sparse_lib.Connectivity):
      raise ValueError(
          "connectivity of SparseLinear must be a haiku_etp.Connectivity "
          f"(Connectivity.from_mask or .random), got "
          f"{type(connectivity).__name__}."
      )
    self.connectivity = connectivity
    self.output_size = connectivity.shape[1]
    self.with_bias = with_bias
    self.w_init = w_init
    self.b_init = b_init or jnp.zeros
    if max_events is not None:
      max_events = check_positive(max_events, "max_events")
    self.max_events = max_events

  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Applies the layer to ``(input_size,)`` or ``(B, input_size)``.

    Raises:
      ValueError: for inputs of another rank or size.
    """
    inputs = as_floating(inputs)
    c = self.connectivity
    fan_in = max(1.0, c.nnz / c.shape[1])
    w = hk.get_parameter(
        "w",
        (c.nnz,),
        inputs.dtype,
        init=self.w_init or fan_in_init(fan_in),
    )
    b = None
    if self.with_bias:
      b = hk.get_parameter(
          "b", (self.output_size,), inputs.dtype, init=self.b_init
      )
    return sparse_lib.sparse(inputs, w, c, b, max_events=self.max_events)


class Embed(hk.Module):
  """Token embedding through :func:`haiku_etp.embedding`.

  Like ``hk.Embed``: the parameter ``embeddings`` of shape
  ``(vocab_size, embed_dim)``, truncated normal (std 1) by default, and
  ``ids -> embeddings[ids]`` for integer ``ids`` with a leading batch axis
  (``(B,)`` or ``(B, L)``; ``batched=False`` for one sample). With
  ``max_rows``, D-RTRL keeps its trace per looked-up row instead of over the
  vocabulary (see :func:`haiku_etp.embedding`).

  Ids must lie in ``[0, vocab_size)``. Concrete ids (eager calls) out of
  range raise ``ValueError``. Traced ids (under ``jit``, inside a learner's
  ``sequence_grad`` or ``value_and_grad``) cannot be checked: an id out of
  range, negative ones included, looks up a row of zeros and gives no row of
  the table a gradient, in BPTT and in the learners' traces alike.

  >>> import haiku as hk, jax, jax.numpy as jnp
  >>> f = hk.transform(lambda ids: Embed(10, 4)(ids))
  >>> params = f.init(jax.random.PRNGKey(0), jnp.zeros((2,), jnp.int32))
  >>> params["embed"]["embeddings"].shape
  (10, 4)
  """

  def __init__(
      self,
      vocab_size: int,
      embed_dim: int,
      w_init: Optional[hk.initializers.Initializer] = None,
      max_rows: Optional[int] = None,
      batched: bool = True,
      name: Optional[str] = None,
  ):
    """Constructs the embedding.

    Args:
      vocab_size: rows of the table.
      embed_dim: width of each row.
      w_init: initialiser of the table.
      max_rows: ``None``, or D-RTRL's slots per sample and position of a
        trace kept per looked-up row.
      batched: whether the ids carry a leading batch axis.
      name: module name.

    Raises:
      ValueError: for sizes that are not positive ints.
    """
    super().__init__(name=name)
    self.vocab_size = check_positive(vocab_size, "vocab_size")
    self.embed_dim = check_positive(embed_dim, "embed_dim")
    self.w_init = w_init or hk.initializers.TruncatedNormal()
    self.max_rows = max_rows
    self.batched = batched

  def __call__(self, ids: jax.Array) -> jax.Array:
    """Looks the rows of ``ids`` up (zeros for traced ids out of range).

    Raises:
      ValueError: for non-integer ids, or concrete ids out of range.
    """
    table = hk.get_parameter(
        "embeddings",
        (self.vocab_size, self.embed_dim),
        jnp.result_type(float),
        init=self.w_init,
    )
    return embedding_lib.embedding(
        ids, table, batched=self.batched, max_rows=self.max_rows
    )


class ConvND(hk.Module):
  """N-D convolution through :func:`haiku_etp.conv`.

  A drop-in replacement for ``hk.ConvND``: the kernel ``w`` has shape
  ``(*kernel_shape, input_channels // feature_group_count, output_channels)``
  whatever the data format, and the bias ``b`` has shape
  ``(output_channels,)`` (``(output_channels, 1, ..., 1)`` for channels-first
  layouts), both with Haiku's default initialisers. Inputs are batched
  (rank ``num_spatial_dims + 2``) or unbatched (rank ``num_spatial_dims +
  1``). Integer and boolean inputs (spikes) are cast to JAX's default
  floating dtype, which the parameters take.

  >>> import haiku as hk, jax, jax.numpy as jnp
  >>> f = hk.transform(lambda x: ConvND(2, 4, 3)(x))
  >>> params = f.init(jax.random.PRNGKey(0), jnp.ones((1, 8, 8, 2)))
  >>> params["conv_nd"]["w"].shape
  (3, 3, 2, 4)
  """

  def __init__(
      self,
      num_spatial_dims: int,
      output_channels: int,
      kernel_shape: Union[int, Sequence[int]],
      stride: Union[int, Sequence[int]] = 1,
      rate: Union[int, Sequence[int]] = 1,
      padding: Padding = "SAME",
      with_bias: bool = True,
      w_init: Optional[hk.initializers.Initializer] = None,
      b_init: Optional[hk.initializers.Initializer] = None,
      data_format: str = "channels_last",
      mask: Optional[jax.Array] = None,
      feature_group_count: int = 1,
      name: Optional[str] = None,
  ):
    """Constructs the convolution.

    Args:
      num_spatial_dims: number of spatial axes (1 or more).
      output_channels: number of output channels.
      kernel_shape: kernel size, an int or one per spatial axis.
      stride: window stride, an int or one per spatial axis.
      rate: kernel dilation, an int or one per spatial axis.
      padding: ``"SAME"``, ``"VALID"``, ``(low, high)`` pairs, or a pad
        function (or one per spatial axis) mapping the dilated kernel size to
        ``(low, high)``, as ``hk.pad.causal``.
      with_bias: whether to add a bias.
      w_init: weight initialiser; truncated normal with std
        ``1/sqrt(fan_in)`` by default.
      b_init: bias initialiser; zeros by default.
      data_format: ``"channels_last"``, ``"channels_first"`` or a layout
        string (``"NHWC"``, ``"NCHW"``, ...).
      mask: optional array of the kernel's shape multiplied into the kernel.
      feature_group_count: number of feature groups.
      name: module name.

    Raises:
      ValueError: for a non-positive size, a sequence of the wrong length or
        an unknown ``data_format``.
    """
    super().__init__(name=name)
    self.num_spatial_dims = check_positive(num_spatial_dims, "num_spatial_dims")
    n = self.num_spatial_dims
    self.output_channels = check_positive(output_channels, "output_channels")
    self.kernel_shape = replicate(kernel_shape, n, "kernel_shape")
    self.stride = replicate(stride, n, "stride")
    self.rate = replicate(rate, n, "rate")
    self.padding = _padding(padding, self.kernel_shape, self.rate, n)
    self.with_bias = with_bias
    self.w_init = w_init
    self.b_init = b_init or jnp.zeros
    self.data_format = data_format
    self.channel_index = channel_index(data_format, n)
    self.mask = mask
    self.feature_group_count = check_positive(
        feature_group_count, "feature_group_count"
    )
    if self.output_channels % self.feature_group_count:
      raise ValueError(
          f"output_channels {output_channels} must be a multiple of "
          f"feature_group_count {feature_group_count}."
      )
    self.dimension_numbers = dimension_numbers(
        n, channels_last=self.channel_index == -1
    )

  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Applies the convolution.

    Args:
      inputs: ``(B, *spatial, C)`` or ``(*spatial, C)`` for channels-last
        layouts, ``(B, C, *spatial)`` or ``(C, *spatial)`` otherwise.

    Returns:
      The output, batched like the input.

    Raises:
      ValueError: on a wrong rank, a channel count that is not a multiple of
        ``feature_group_count``, or a mask of the wrong shape.
    """
    inputs, w, b, unbatched = self._params(inputs)
    out = self._apply(inputs, w, b)
    return out[0] if unbatched else out

  def split(self, inputs: jax.Array, num: int) -> tuple[jax.Array, ...]:
    """``jnp.split(self(inputs), num, channel_axis)``, one ETP op per part.

    Each part is computed from its own slice of the kernel's output channels
    (and of ``b``), so the compiler sees one relation per part. Recurrent
    cells use this to feed each gate from its own relation.

    Args:
      inputs: as for ``__call__``.
      num: number of equal parts; must divide ``output_channels``.

    Returns:
      ``num`` arrays of ``output_channels // num`` channels each.

    Raises:
      ValueError: if ``num`` does not divide ``output_channels``, or with
        ``feature_group_count > 1`` (a part would straddle groups).
    """
    size = _part_size(self.output_channels, num, "output_channels")
    if self.feature_group_count != 1:
      raise ValueError(
          f"{type(self).__name__}.split needs feature_group_count == 1, got "
          f"{self.feature_group_count}."
      )
    inputs, w, b, unbatched = self._params(inputs)
    outs = tuple(
        self._apply(
            inputs, w[..., k * size : (k + 1) * size], _part(b, k, size)
        )
        for k in range(num)
    )
    return tuple(o[0] for o in outs) if unbatched else outs

  def _params(self, inputs: jax.Array):
    inputs = as_floating(inputs)
    name = type(self).__name__
    unbatched_rank = self.num_spatial_dims + 1
    checks.assert_rank(
        inputs,
        {unbatched_rank, unbatched_rank + 1},
        custom_message=(
            f"Input to {name} must have rank {unbatched_rank} (unbatched) or "
            f"{unbatched_rank + 1}, got shape {tuple(inputs.shape)}."
        ),
    )
    unbatched = inputs.ndim == unbatched_rank
    if unbatched:
      inputs = inputs[None]
    in_channels = inputs.shape[self.channel_index]
    if in_channels % self.feature_group_count:
      raise ValueError(
          f"Input to {name} has {in_channels} channels, not a multiple of "
          f"feature_group_count {self.feature_group_count}; input shape "
          f"{tuple(inputs.shape)}."
      )
    w_shape = self.kernel_shape + (
        in_channels // self.feature_group_count,
        self.output_channels,
    )
    if self.mask is not None and tuple(self.mask.shape) != w_shape:
      raise ValueError(
          f"mask of {name} must have the kernel's shape {w_shape}, got "
          f"{tuple(self.mask.shape)}."
      )
    w_init = self.w_init or fan_in_init(math.prod(w_shape[:-1]))
    w = hk.get_parameter("w", w_shape, inputs.dtype, init=w_init)
    if self.mask is not None:
      w = w * self.mask
    b = None
    if self.with_bias:
      b_shape: tuple[int, ...] = (self.output_channels,)
      if self.channel_index != -1:
        b_shape += (1,) * self.num_spatial_dims
      b = hk.get_parameter("b", b_shape, inputs.dtype, init=self.b_init)
      b = jnp.reshape(b, (self.output_channels,))
    return inputs, w, b, unbatched

  def _apply(self, inputs: jax.Array, w: jax.Array, b: Optional[jax.Array]):
    return conv_lib.conv(
        inputs,
        w,
        b,
        strides=self.stride,
        padding=self.padding,
        rhs_dilation=self.rate,
        feature_group_count=self.feature_group_count,
        dimension_numbers=self.dimension_numbers,
    )


class Conv1D(ConvND):
  """1-D convolution, a drop-in ``hk.Conv1D``; see :class:`ConvND`.

  The kernel ``w`` has shape ``(*kernel_shape, C_in // feature_group_count,
  output_channels)``; inputs are ``NWC`` (the default), ``NCW`` or
  unbatched without the ``N``.
  """

  def __init__(
      self,
      output_channels: int,
      kernel_shape: Union[int, Sequence[int]],
      stride: Union[int, Sequence[int]] = 1,
      rate: Union[int, Sequence[int]] = 1,
      padding: Padding = "SAME",
      with_bias: bool = True,
      w_init: Optional[hk.initializers.Initializer] = None,
      b_init: Optional[hk.initializers.Initializer] = None,
      data_format: str = "NWC",
      mask: Optional[jax.Array] = None,
      feature_group_count: int = 1,
      name: Optional[str] = None,
  ):
    """Constructs the convolution.

    Args:
      output_channels: number of output channels.
      kernel_shape: kernel size, an int or a sequence of one.
      stride: window stride, an int or a sequence of one.
      rate: kernel dilation, an int or a sequence of one.
      padding: ``"SAME"``, ``"VALID"``, one ``(low, high)`` pair, or a pad
        function (or one per spatial axis) mapping the dilated kernel size to
        ``(low, high)``, as ``hk.pad.causal``.
      with_bias: whether to add a bias.
      w_init: weight initialiser; truncated normal with std
        ``1/sqrt(fan_in)`` by default.
      b_init: bias initialiser; zeros by default.
      data_format: ``"NWC"`` (``"channels_last"``) or ``"NCW"``
        (``"channels_first"``).
      mask: optional array of the kernel's shape multiplied into the kernel.
      feature_group_count: number of feature groups.
      name: module name.

    Raises:
      ValueError: for a non-positive size, a sequence of the wrong length or
        an unknown ``data_format``.
    """
    super().__init__(
        num_spatial_dims=1,
        output_channels=output_channels,
        kernel_shape=kernel_shape,
        stride=stride,
        rate=rate,
        padding=padding,
        with_bias=with_bias,
        w_init=w_init,
        b_init=b_init,
        data_format=data_format,
        mask=mask,
        feature_group_count=feature_group_count,
        name=name,
    )


class Conv2D(ConvND):
  """2-D convolution, a drop-in ``hk.Conv2D``; see :class:`ConvND`.

  The kernel ``w`` has shape ``(*kernel_shape, C_in // feature_group_count,
  output_channels)``; inputs are ``NHWC`` (the default), ``NCHW`` or
  unbatched without the ``N``.
  """

  def __init__(
      self,
      output_channels: int,
      kernel_shape: Union[int, Sequence[int]],
      stride: Union[int, Sequence[int]] = 1,
      rate: Union[int, Sequence[int]] = 1,
      padding: Padding = "SAME",
      with_bias: bool = True,
      w_init: Optional[hk.initializers.Initializer] = None,
      b_init: Optional[hk.initializers.Initializer] = None,
      data_format: str = "NHWC",
      mask: Optional[jax.Array] = None,
      feature_group_count: int = 1,
      name: Optional[str] = None,
  ):
    """Constructs the convolution.

    Args:
      output_channels: number of output channels.
      kernel_shape: kernel size, an int or a sequence of 2.
      stride: window stride, an int or a sequence of 2.
      rate: kernel dilation, an int or a sequence of 2.
      padding: ``"SAME"``, ``"VALID"``, 2 ``(low, high)`` pairs, or a pad
        function (or one per spatial axis) mapping the dilated kernel size to
        ``(low, high)``, as ``hk.pad.causal``.
      with_bias: whether to add a bias.
      w_init: weight initialiser; truncated normal with std
        ``1/sqrt(fan_in)`` by default.
      b_init: bias initialiser; zeros by default.
      data_format: ``"NHWC"`` (``"channels_last"``) or ``"NCHW"``
        (``"channels_first"``).
      mask: optional array of the kernel's shape multiplied into the kernel.
      feature_group_count: number of feature groups.
      name: module name.

    Raises:
      ValueError: for a non-positive size, a sequence of the wrong length or
        an unknown ``data_format``.
    """
    super().__init__(
        num_spatial_dims=2,
        output_channels=output_channels,
        kernel_shape=kernel_shape,
        stride=stride,
        rate=rate,
        padding=padding,
        with_bias=with_bias,
        w_init=w_init,
        b_init=b_init,
        data_format=data_format,
        mask=mask,
        feature_group_count=feature_group_count,
        name=name,
    )


class Conv3D(ConvND):
  """3-D convolution, a drop-in ``hk.Conv3D``; see :class:`ConvND`.

  The kernel ``w`` has shape ``(*kernel_shape, C_in // feature_group_count,
  output_channels)``; inputs are ``NDHWC`` (the default), ``NCDHW`` or
  unbatched without the ``N``.
  """

  def __init__(
      self,
      output_channels: int,
      kernel_shape: Union[int, Sequence[int]],
      stride: Union[int, Sequence[int]] = 1,
      rate: Union[int, Sequence[int]] = 1,
      padding: Padding = "SAME",
      with_bias: bool = True,
      w_init: Optional[hk.initializers.Initializer] = None,
      b_init: Optional[hk.initializers.Initializer] = None,
      data_format: str = "NDHWC",
      mask: Optional[jax.Array] = None,
      feature_group_count: int = 1,
      name: Optional[str] = None,
  ):
    """Constructs the convolution.

    Args:
      output_channels: number of output channels.
      kernel_shape: kernel size, an int or a sequence of 3.
      stride: window stride, an int or a sequence of 3.
      rate: kernel dilation, an int or a sequence of 3.
      padding: ``"SAME"``, ``"VALID"``, 3 ``(low, high)`` pairs, or a pad
        function (or one per spatial axis) mapping the dilated kernel size to
        ``(low, high)``, as ``hk.pad.causal``.
      with_bias: whether to add a bias.
      w_init: weight initialiser; truncated normal with std
        ``1/sqrt(fan_in)`` by default.
      b_init: bias initialiser; zeros by default.
      data_format: ``"NDHWC"`` (``"channels_last"``) or ``"NCDHW"``
        (``"channels_first"``).
      mask: optional array of the kernel's shape multiplied into the kernel.
      feature_group_count: number of feature groups.
      name: module name.

    Raises:
      ValueError: for a non-positive size, a sequence of the wrong length or
        an unknown ``data_format``.
    """
    super().__init__(
        num_spatial_dims=3,
        output_channels=output_channels,
        kernel_shape=kernel_shape,
        stride=stride,
        rate=rate,
        padding=padding,
        with_bias=with_bias,
        w_init=w_init,
        b_init=b_init,
        data_format=data_format,
        mask=mask,
        feature_group_count=feature_group_count,
        name=name,
    )
