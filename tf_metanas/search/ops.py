"""Candidate operations of the DARTS-style search spaces, as Keras layers.

Every op maps [B, H, W, C] to [B, ceil(H / stride), ceil(W / stride), C] in the DARTS
order ReLU -> conv -> BatchNorm. BatchNorm is affine-free inside the supernet (DARTS,
METANAS) and may be affine in discrete networks. Op sets are data: a tuple of names.
"""

import keras
from keras import layers
from keras import ops as K

from tf_metanas.search import batch_norm

OP_SETS = {
    # METANAS (Elsken et al. 2020, Sec. 5.1): no "none" op; its "conv_3x3" is the authors'
    # (ReLU, depthwise 3x3, pointwise 1x1, BN), not a full convolution.
    "S1": ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "conv_1x5_5x1", "conv_3x3",
           "sep_conv_3x3", "dil_conv_3x3"),
    # DARTS (Liu et al. 2019), used by T-NAS, CAML and BASE.
    "DARTS": ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3",
              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"),
    # Auto-Meta / PNAS blocks (Kim et al. 2018): 3x3 convolution (a full one), 5x5
    # factorized convolution, identity, 3x3 average and max pooling.
    "PNAS": ("full_conv_3x3", "conv_1x5_5x1", "skip_connect", "avg_pool_3x3", "max_pool_3x3"),
}
# BASE (Shaw et al. 2019; the authors' operations.py): DARTS plus a 7x7 separable conv and a
# factorized 7x7 conv; "BASE_PAIRS" without "none", which their genotypes never pick.
OP_SETS["BASE"] = OP_SETS["DARTS"] + ("sep_conv_7x7", "conv_7x1_1x7")
OP_SETS["BASE_PAIRS"] = OP_SETS["BASE"][1:]


def _bn(affine):
  return batch_norm.BatchNorm(center=affine, scale=affine, momentum=0.9, epsilon=1e-5)


class _Op(layers.Layer):
  """Base: every op knows its channels, stride and whether its BatchNorms are affine."""

  def __init__(self, channels, stride=1, affine=False, **kwargs):
    super().__init__(**kwargs)
    self.channels, self.stride, self.affine = int(channels), int(stride), bool(affine)

  def compute_output_shape(self, input_shape):
    return output_shape(input_shape, self.channels, self.stride)

  def get_config(self):
    return {**super().get_config(), "channels": self.channels, "stride": self.stride,
            "affine": self.affine}


@keras.saving.register_keras_serializable("tf_metanas")
class Zero(_Op):
  """The "none" op: zeros of the output shape (no parameters)."""

  def call(self, x, training=None):
    x = x[:, ::self.stride, ::self.stride, :] if self.stride > 1 else x
    return K.zeros_like(x)


@keras.saving.register_keras_serializable("tf_metanas")
class Identity(_Op):

  def call(self, x, training=None):
    return x


@keras.saving.register_keras_serializable("tf_metanas")
class FactorizedReduce(_Op):
  """ReLU, two 1x1 stride-2 convs on x and on x shifted by one pixel, concat, BN.

  A 1x1 stride-2 "same" convolution reads pixels 0, 2, 4, ... (it pads nothing), so it is
  computed as that subsampling followed by a 1x1 stride-1 convolution: the same function,
  with no work on the skipped pixels, and clear of TF 2.21's oneDNN filter gradient of
  strided 1x1 convolutions, which corrupts the heap (see BENCHMARKS.md).
  """

  def build(self, input_shape):
    half = self.channels // 2
    self.conv_a = layers.Conv2D(half, 1, use_bias=False)
    self.conv_b = layers.Conv2D(self.channels - half, 1, use_bias=False)
    self.bn = _bn(self.affine)
    self.conv_a.build(input_shape)
    self.conv_b.build(input_shape)
    self.bn.build(tuple(input_shape[:-1]) + (self.channels,))

  def call(self, x, training=None):
    x = K.relu(x)
    shifted = K.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1::2, 1::2, :]
    y = K.concatenate([self.conv_a(x[:, ::2, ::2, :]), self.conv_b(shifted)], axis=-1)
    return self.bn(y, training=training)


@keras.saving.register_keras_serializable("tf_metanas")
class PoolBN(_Op):
  """3x3 max or average pooling ("same", padding excluded from averages), then BN."""

  def __init__(self, channels, stride=1, affine=False, pool="max", **kwargs):
    super().__init__(channels, stride, affine, **kwargs)
    self.pool = pool
    pool_layer = layers.MaxPooling2D if pool == "max" else layers.AveragePooling2D
    self.pooling = pool_layer(3, strides=stride, padding="same")
    self.bn = _bn(affine)

  def build(self, input_shape):
    self.bn.build(input_shape)

  def call(self, x, training=None):
    return self.bn(self.pooling(x), training=training)

  def get_config(self):
    return {**super().get_config(), "pool": self.pool}


@keras.saving.register_keras_serializable("tf_metanas")
class ReLUConvBN(_Op):
  """ReLU, a k x k convolution (or 1 x k then k x 1 when `factorized`), BN."""

  def __init__(self, channels, stride=1, affine=False, kernel=3, factorized=False, **kwargs):
    super().__init__(channels, stride, affine, **kwargs)
    self.kernel, self.factorized = int(kernel), bool(factorized)
    if factorized:
      self.convs = [
          layers.Conv2D(channels, (1, kernel), strides=(1, stride), padding="same",
                        use_bias=False),
          layers.Conv2D(channels, (kernel, 1), strides=(stride, 1), padding="same",
                        use_bias=False)]
    else:
      self.convs = [layers.Conv2D(channels, kernel, strides=stride, padding="same",
                                  use_bias=False)]
    self.bn = _bn(affine)

  def build(self, input_shape):
    shape = input_shape
    for conv in self.convs:
      conv.build(shape)
      shape = conv.compute_output_shape(shape)
    self.bn.build(shape)

  def call(self, x, training=None):
    x = K.relu(x)
    for conv in self.convs:
      x = conv(x)
    return self.bn(x, training=training)

  def get_config(self):
    return {**super().get_config(), "kernel": self.kernel, "factorized": self.factorized}


@keras.saving.register_keras_serializable("tf_metanas")
class DilConv(_Op):
  """ReLU, depthwise k x k conv with dilation, pointwise 1x1 conv, BN.

  TensorFlow cannot combine dilation and stride in one conv; a strided dilated conv is the
  stride-1 conv subsampled at every `stride`-th pixel, which is the same function.
  """

  def __init__(self, channels, stride=1, affine=False, kernel=3, dilation=1, **kwargs):
    super().__init__(channels, stride, affine, **kwargs)
    self.kernel, self.dilation = int(kernel), int(dilation)
    conv_stride = 1 if dilation > 1 else stride
    self.depthwise = layers.DepthwiseConv2D(kernel, strides=conv_stride, padding="same",
                                            dilation_rate=dilation, use_bias=False)
    self.pointwise = layers.Conv2D(channels, 1, use_bias=False)
    self.bn = _bn(affine)

  def build(self, input_shape):
    self.depthwise.build(input_shape)
    self.pointwise.build(input_shape)
    self.bn.build(input_shape)

  def call(self, x, training=None):
    x = self.depthwise(K.relu(x))
    if self.dilation > 1 and self.stride > 1:
      x = x[:, ::self.stride, ::self.stride, :]
    return self.bn(self.pointwise(x), training=training)

  def get_config(self):
    return {**super().get_config(), "kernel": self.kernel, "dilation": self.dilation}


@keras.saving.register_keras_serializable("tf_metanas")
class SepConv(_Op):
  """A separable conv applied twice (DARTS): DilConv(stride) then DilConv(1), dilation 1."""

  def __init__(self, channels, stride=1, affine=False, kernel=3, **kwargs):
    super().__init__(channels, stride, affine, **kwargs)
    self.kernel = int(kernel)
    self.first = DilConv(channels, stride, affine, kernel)
    self.second = DilConv(channels, 1, affine, kernel)

  def build(self, input_shape):
    self.first.build(input_shape)
    self.second.build(self.first.compute_output_shape(input_shape))

  def call(self, x, training=None):
    return self.second(self.first(x, training=training), training=training)

  def get_config(self):
    return {**super().get_config(), "kernel": self.kernel}


def output_shape(input_shape, channels, stride):
  """[B, ceil(H / s), ceil(W / s), channels]."""
  b, h, w = input_shape[0], input_shape[1], input_shape[2]
  ceil = lambda n: None if n is None else -(-n // stride)
  return (b, ceil(h), ceil(w), channels)


_BUILDERS = {
    "none": lambda c, s, a: Zero(c, s, a),
    "skip_connect": lambda c, s, a: Identity(c, s, a) if s == 1 else FactorizedReduce(c, s, a),
    "max_pool_3x3": lambda c, s, a: PoolBN(c, s, a, pool="max"),
    "avg_pool_3x3": lambda c, s, a: PoolBN(c, s, a, pool="avg"),
    # METANAS's conv_3x3 (the authors' ops.py): one depthwise-separable 3x3 convolution.
    "conv_3x3": lambda c, s, a: DilConv(c, s, a, kernel=3, dilation=1),
    "full_conv_3x3": lambda c, s, a: ReLUConvBN(c, s, a, kernel=3),
    "conv_1x5_5x1": lambda c, s, a: ReLUConvBN(c, s, a, kernel=5, factorized=True),
    "sep_conv_3x3": lambda c, s, a: SepConv(c, s, a, kernel=3),
    "sep_conv_5x5": lambda c, s, a: SepConv(c, s, a, kernel=5),
    "sep_conv_7x7": lambda c, s, a: SepConv(c, s, a, kernel=7),
    # BASE's (the authors' operations.py): ReLU, 1x7 conv at stride (1, s), 7x1 conv at
    # stride (s, 1), BN.
    "conv_7x1_1x7": lambda c, s, a: ReLUConvBN(c, s, a, kernel=7, factorized=True),
    "dil_conv_3x3": lambda c, s, a: DilConv(c, s, a, kernel=3, dilation=2),
    "dil_conv_5x5": lambda c, s, a: DilConv(c, s, a, kernel=5, dilation=2),
}
OP_NAMES = tuple(_BUILDERS)


def make_op(name, channels, stride=1, affine=False):
  """Builds the op `name` (one of OP_NAMES) for `channels` channels at `stride`."""
  if name not in _BUILDERS:
    raise ValueError(f"unknown op {name!r}; known ops: {', '.join(OP_NAMES)}")
  return _BUILDERS[name](channels, stride, affine)


def op_set(name_or_ops):
  """An op set by name (a key of OP_SETS: "S1", "DARTS", "PNAS", "BASE", "BASE_PAIRS") or
  as an explicit tuple of op names."""
  if isinstance(name_or_ops, str):
    if name_or_ops not in OP_SETS:
      raise ValueError(f"unknown op set {name_or_ops!r}; known: {', '.join(OP_SETS)}")
    return OP_SETS[name_or_ops]
  ops = tuple(name_or_ops)
  for name in ops:
    if name not in _BUILDERS:
      raise ValueError(f"unknown op {name!r} in op set; known ops: {', '.join(OP_NAMES)}")
  return ops
