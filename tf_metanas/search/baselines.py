"""Fixed baseline networks: Conv4 (MAML), the REPTILE networks, and the Auto-Meta cell."""

import keras
from keras import layers

from tf_metanas.search import batch_norm
from tf_metanas.search import blocks
from tf_metanas.search import functional
from tf_metanas.search import genotype as genotype_lib
from tf_metanas.search import network as network_lib

# The Auto-Meta cell (Kim et al. 2018, Fig. 1): five blocks of PNAS ops (its "3x3 conv" is
# a full convolution, `full_conv_3x3`; "5x5 factorized conv" is `conv_1x5_5x1`), each adding
# two inputs, used for both cell types. In the figure the cell output also concatenates the
# cell inputs; here, as in the METANAS authors' comparison (Elsken et al. 2020, Table 1), it
# concatenates the five blocks.
_AUTOMETA_CELL = (
    (("full_conv_3x3", 1), ("max_pool_3x3", 1)),
    (("conv_1x5_5x1", 2), ("max_pool_3x3", 2)),
    (("full_conv_3x3", 2), ("conv_1x5_5x1", 3)),
    (("full_conv_3x3", 3), ("full_conv_3x3", 3)),
    (("conv_1x5_5x1", 3), ("full_conv_3x3", 2)),
)
AUTOMETA_GENOTYPE = genotype_lib.Genotype(normal=_AUTOMETA_CELL, reduce=_AUTOMETA_CELL)

# The cells BASE found (Shaw et al. 2019), as the authors' our_models.py lists them
# (CIFAR_TUNED, IMAGENET_TUNED): per node, two (op, input) pairs of the BASE op set.
BASE_CIFAR_GENOTYPE = genotype_lib.Genotype(
    normal=((("skip_connect", 0), ("dil_conv_3x3", 1)), (("max_pool_3x3", 0), ("dil_conv_5x5", 0)),
            (("max_pool_3x3", 0), ("sep_conv_5x5", 0)), (("max_pool_3x3", 1), ("dil_conv_5x5", 1))),
    reduce=((("sep_conv_3x3", 0), ("sep_conv_5x5", 0)), (("max_pool_3x3", 0), ("sep_conv_3x3", 0)),
            (("skip_connect", 0), ("avg_pool_3x3", 3)), (("max_pool_3x3", 1), ("skip_connect", 2))))
BASE_IMAGENET_GENOTYPE = genotype_lib.Genotype(
    normal=((("skip_connect", 0), ("max_pool_3x3", 1)), (("avg_pool_3x3", 0), ("sep_conv_5x5", 1)),
            (("sep_conv_5x5", 0), ("dil_conv_5x5", 3)), (("sep_conv_5x5", 0), ("sep_conv_5x5", 2))),
    reduce=((("max_pool_3x3", 0), ("sep_conv_5x5", 0)), (("max_pool_3x3", 0), ("avg_pool_3x3", 0)),
            (("sep_conv_5x5", 2), ("dil_conv_5x5", 2)), (("avg_pool_3x3", 0), ("sep_conv_5x5", 3))))


ACTIVATIONS = {"relu": keras.ops.relu,
               "leaky_relu": lambda x: keras.ops.leaky_relu(x, negative_slope=0.01)}


@keras.saving.register_keras_serializable("tf_metanas")
class Conv4(functional.FunctionalModel):
  """Four blocks of 3x3 conv (with bias) -> BatchNorm -> ReLU, downsampling by 2 each, and
  a linear classifier (Finn et al. 2017; Nichol et al. 2018).

  Args:
    num_classes: ways.
    filters: 64 (Omniglot) or 32 (mini-ImageNet).
    downsample: "stride" (stride-2 convs, the Omniglot models) or "pool" (2x2 max pooling
      after each block, the mini-ImageNet models).
    head: "flatten" (REPTILE, MAML mini-ImageNet) or "mean" (global average, MAML Omniglot).
    pool_padding: "same" (REPTILE: 84 -> 6x6 maps) or "valid" (MAML, MAML++: 84 -> 5x5).
    activation: "relu", or "leaky_relu" (slope 0.01, PyTorch's default: MAML++).
    input_mean, input_std: per-channel statistics the [0, 1] inputs are normalized with,
      (x - mean) / std (MAML++ on mini-ImageNet: ImageNet's); None: inputs as they are.
    bn_scale: BatchNorms with a scale (False: shift only, the official MAML code's
      tf.contrib batch_norm).
    bn_epsilon: BatchNorm epsilon (the official MAML code: 1e-3).
    classifier_init: Keras initializer of the classifier's kernel (the official MAML
      code's Omniglot head: RandomNormal(stddev=1)).
  """

  def __init__(self, num_classes, filters=64, downsample="stride", head="flatten",
               pool_padding="same", activation="relu", input_mean=None, input_std=None,
               bn_scale=True, bn_epsilon=1e-5, classifier_init="glorot_uniform", **kwargs):
    super().__init__(**kwargs)
    if (downsample not in ("stride", "pool") or head not in ("flatten", "mean") or
        pool_padding not in ("same", "valid") or activation not in ACTIVATIONS):
      raise ValueError(f"downsample must be 'stride' or 'pool', head 'flatten' or 'mean', "
                       f"pool_padding 'same' or 'valid' and activation one of "
                       f"{sorted(ACTIVATIONS)}; got {downsample!r}, {head!r}, "
                       f"{pool_padding!r}, {activation!r}")
    self.num_classes, self.filters = int(num_classes), int(filters)
    self.downsample, self.head = downsample, head
    self.pool_padding, self.activation = pool_padding, activation
    if (input_mean is None) != (input_std is None):
      raise ValueError("give both input_mean and input_std, or neither")
    self.input_mean = None if input_mean is None else tuple(float(m) for m in input_mean)
    self.input_std = None if input_std is None else tuple(float(s) for s in input_std)
    stride = 2 if downsample == "stride" else 1
    self.convs = [layers.Conv2D(filters, 3, strides=stride, padding="same") for _ in range(4)]
    self.bn_scale, self.bn_epsilon = bool(bn_scale), float(bn_epsilon)
    self.classifier_init = classifier_init
    self.norms = [batch_norm.BatchNorm(momentum=0.9, epsilon=bn_epsilon, scale=bn_scale)
                  for _ in range(4)]
    self.pools = [layers.MaxPooling2D(2, padding=pool_padding) for _ in range(4)]
    self.reduce = layers.Flatten() if head == "flatten" else layers.GlobalAveragePooling2D()
    self.classifier = layers.Dense(num_classes, kernel_initializer=classifier_init)

  def build(self, input_shape):
    shape = tuple(input_shape)
    for conv, norm, pool in zip(self.convs, self.norms, self.pools):
      conv.build(shape)
      shape = conv.compute_output_shape(shape)
      norm.build(shape)
      shape = pool.compute_output_shape(shape) if self.downsample == "pool" else shape
    self.classifier.build(self.reduce.compute_output_shape(shape))

  def call(self, images, training=None):
    x = keras.ops.cast(images, self.compute_dtype)
    if self.input_mean is not None:
      mean, std = (keras.ops.convert_to_tensor(v, x.dtype) for v in (self.input_mean,
                                                                     self.input_std))
      x = (x - mean) / std
    for conv, norm, pool in zip(self.convs, self.norms, self.pools):
      x = ACTIVATIONS[self.activation](norm(conv(x), training=training))
      x = pool(x) if self.downsample == "pool" else x
    return self.classifier(self.reduce(x))

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes, "filters": self.filters,
            "downsample": self.downsample, "head": self.head,
            "pool_padding": self.pool_padding, "activation": self.activation,
            "input_mean": self.input_mean, "input_std": self.input_std,
            "bn_scale": self.bn_scale, "bn_epsilon": self.bn_epsilon,
            "classifier_init": keras.initializers.serialize(
                keras.initializers.get(self.classifier_init))}


def reptile_network(num_classes, dataset="omniglot"):
  """The REPTILE models: Omniglot 4 x (64 filters, stride 2), mini-ImageNet 4 x (32 filters,
  max pooling), flattened into the classifier."""
  if dataset in ("omniglot", "glyphs"):
    return Conv4(num_classes, filters=64, downsample="stride", head="flatten")
  return Conv4(num_classes, filters=32, downsample="pool", head="flatten")


def maml_network(num_classes, dataset="omniglot"):
  """The MAML models (cbfinn/maml): Omniglot 4 x (64 filters, stride 2) averaged over space
  into a classifier initialized N(0, 1); mini-ImageNet 4 x (32 filters, 2x2 max pooling
  with VALID padding: 5x5 maps) flattened; BatchNorms without scale, epsilon 1e-3 (its
  shifts are meta-learned, not adapted: `MetaLearner.adapt_batch_norm = False`)."""
  batch_norm_args = {"bn_scale": False, "bn_epsilon": 1e-3}
  if dataset in ("omniglot", "glyphs"):
    return Conv4(num_classes, filters=64, downsample="stride", head="mean",
                 classifier_init=keras.initializers.RandomNormal(stddev=1.0), **batch_norm_args)
  return Conv4(num_classes, filters=32, downsample="pool", head="flatten", pool_padding="valid",
               **batch_norm_args)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def mamlpp_network(num_classes, filters=48):
  """The MAML++ model (HowToTrainYourMAMLPytorch, VGGReLUNormNetwork): 4 x (3x3 conv,
  BatchNorm, leaky ReLU, 2x2 max pooling without padding), 48 filters, flattened; inputs
  normalized with ImageNet's mean and std, as its mini-ImageNet data provider does."""
  return Conv4(num_classes, filters=filters, downsample="pool", head="flatten",
               pool_padding="valid", activation="leaky_relu", input_mean=IMAGENET_MEAN,
               input_std=IMAGENET_STD)


def autometa_network(num_classes, cell=None, filters=12, unroll=1, scale_rate=1, stem="conv",
                     **kwargs):
  """The Auto-Meta network (Kim et al. 2018, Table A1): N = `unroll` cells, a reduction
  cell, N cells (2N + 1 cells, the PNAS stacking), F = `filters` filters in the stem and the
  first cells, multiplied by the feature scale rate (1 or 2) at the reduction.

  With the paper's Fig. 1 cell and N = 1 this is 25.6k weights at F = 10, rate 1 (the paper's
  small setting: 28k with its own cells) and 106k at F = 12, rate 2 (large: 94-99k) on
  84x84x3 images.

  Args:
    num_classes: ways.
    cell: a `search.blocks.BlockCell`, its JSON, or None for the Fig. 1 cell.
    filters: F.
    unroll: N, cells before and after the reduction cell (Table A1: 0 or 1).
    scale_rate: 1 (constant width) or 2 (doubled at the reduction).
    stem: the stem kind (`search.stem.KINDS`; "conv": a 3x3 convolution at stride 1).
    **kwargs: further FixedNetwork arguments.
  """
  if scale_rate not in (1, 2):
    raise ValueError(f"autometa_network.scale_rate = {scale_rate!r}: the feature scale rate "
                     f"is 1 or 2")
  if isinstance(cell, str):
    cell = blocks.BlockCell.from_json(cell)
  genotype = AUTOMETA_GENOTYPE if cell is None else cell.genotype()
  return network_lib.FixedNetwork(genotype, num_classes, channels=filters,
                                  num_cells=2 * unroll + 1, reduction_cells=(unroll,),
                                  channel_doubling=scale_rate == 2, stem_multiplier=1,
                                  stem=stem, **kwargs)
