"""Stems (featurization heads): the layers between the images and the first cell.

A network has one stem, or one per input image shape ("heads", BASE Sec. 5.1: separate
initial featurization layers per image size, their strides chosen so that the cells see
comparable resolutions). A head is named by its image shape, "HxWxC" (`shape_key`).
"""

import keras
from keras import layers

from tf_metanas import checks
from tf_metanas.search import batch_norm

KINDS = ("conv", "halved", "pooled")
STRIDES = {"conv": 1, "halved": 2, "pooled": 4}


def shape_key(shape):
  """The head name of images of shape [(batch,) H, W, C]: "HxWxC"."""
  dims = [int(d) for d in tuple(shape)[-3:]]
  return "x".join(str(d) for d in dims)


def parse_key(key):
  """(H, W, C) of a head name "HxWxC"."""
  try:
    dims = tuple(int(d) for d in str(key).split("x"))
  except ValueError:
    dims = ()
  if len(dims) != 3 or min(dims) < 1:
    raise checks.ConfigValueError(f"SearchNetwork.heads key {key!r} is not an image shape "
                                  f"'HxWxC' such as '28x28x1' or '84x84x3'")
  return dims


class Stem(layers.Layer):
  """"conv" (DARTS, METANAS: 3x3 conv, BN; stride 1), "halved" (3x3 conv, BN, 2x2
  max-pool: stride 2, BASE's 32- and 64-pixel heads) or "pooled" (T-NAS's mini-ImageNet
  stem: 3x3 conv to half the channels, BN, 2x2 max-pool, ReLU, then 3x3 conv, BN, 2x2
  max-pool: stride 4, 84 pixels to 21); `channels` output channels."""

  def __init__(self, kind, channels, **kwargs):
    super().__init__(**kwargs)
    if kind not in KINDS:
      raise checks.ConfigValueError(f"unknown stem {kind!r}; use one of {KINDS}")
    self.kind, self.channels = kind, int(channels)
    self.pre = []
    if kind == "pooled":
      self.pre = [layers.Conv2D(channels // 2, 3, padding="same", use_bias=False),
                  batch_norm.BatchNorm(momentum=0.9, epsilon=1e-5),
                  layers.MaxPooling2D(2), layers.ReLU()]
    self.conv = layers.Conv2D(channels, 3, padding="same", use_bias=False)
    self.bn = batch_norm.BatchNorm(momentum=0.9, epsilon=1e-5)
    self.pool = layers.MaxPooling2D(2) if kind != "conv" else None

  def _sequence(self):
    return self.pre + [self.conv, self.bn] + ([self.pool] if self.pool else [])

  def build(self, input_shape):
    shape = tuple(input_shape)
    for layer in self._sequence():
      layer.build(shape)
      shape = layer.compute_output_shape(shape)

  def compute_output_shape(self, input_shape):
    shape = tuple(input_shape)
    for layer in self._sequence():
      shape = layer.compute_output_shape(shape)
    return shape

  def call(self, x, training=None):
    for layer in self._sequence():
      x = layer(x, training=training) if isinstance(layer, batch_norm.BatchNorm) else layer(x)
    return x

  def get_config(self):
    return {**super().get_config(), "kind": self.kind, "channels": self.channels}


def check_heads(heads):
  """`heads` (image shape "HxWxC" -> stem kind) as a dict of str -> str, checked."""
  if not heads:
    return None
  if not isinstance(heads, dict):
    raise checks.ConfigValueError(f"SearchNetwork.heads must be a dict image shape -> stem "
                                  f"kind, e.g. {{'28x28x1': 'conv', '84x84x3': 'pooled'}}; "
                                  f"got {heads!r}")
  out = {}
  for key, kind in heads.items():
    out[shape_key(parse_key(key))] = kind
    if kind not in KINDS:
      raise checks.ConfigValueError(f"SearchNetwork.heads[{key!r}] = {kind!r}: use one of "
                                    f"{KINDS}")
  return out


keras.saving.register_keras_serializable("tf_metanas")(Stem)
