"""glyphs: an Omniglot-like dataset drawn from the DejaVu fonts that matplotlib ships.

Each class is a character (or a set of look-alike characters merged into one class), each
alphabet a script or Unicode block, and each of the 20 instances a different "drawer".
Images are 28x28 black strokes on white, like Omniglot. Splits are by alphabet, so
meta-test classes come from scripts never seen in meta-training. Two versions draw the same
classes and splits:

  * 2 (the default): handwriting. Each drawer poses the character (Omniglot's character
    sizes and positions, aspect, rotation, slant), bends it with smooth random
    displacement fields, reduces it to its centre line and redraws that with a pen of
    Omniglot's stroke width (`handwriting.draw`): thin, wobbly strokes with Omniglot's ink.
  * 1: printed characters: a random face, font size, stroke width, rotation, shear,
    anisotropic scale and shift. About twice Omniglot's ink in thick, even strokes; what a
    network learns on it carries over less well to real handwriting. Kept byte-identical
    to reproduce earlier results.

The dataset needs no download and is byte-identical for a given seed and version (on a
given FreeType build, which Pillow bundles).
"""

import concurrent.futures
import functools
import multiprocessing
import os
import unicodedata

import matplotlib
import numpy as np
from absl import logging
from matplotlib import ft2font
from PIL import Image, ImageDraw, ImageFont

from tf_metanas import choices
from tf_metanas.data import handwriting
from tf_metanas.data import store as store_lib

VERSIONS, VERSION = choices.GLYPHS_VERSIONS, choices.GLYPHS_VERSION  # VERSION: the default
IMAGE_SIZE = 28
INSTANCES_PER_CLASS = 20

# (alphabet, Unicode ranges). Characters are kept if DejaVu Sans draws them and they are
# letters, digits or symbols (no marks, spaces, controls or punctuation).
ALPHABETS = (
    ("Latin", ((0x0041, 0x005A), (0x0061, 0x007A), (0x00C0, 0x024F))),
    ("IPA", ((0x0250, 0x02AF), (0x1D00, 0x1DBF))),
    ("Greek", ((0x0370, 0x03FF), (0x1F00, 0x1FFF))),
    ("Cyrillic", ((0x0400, 0x052F), (0xA640, 0xA69F))),
    ("Armenian", ((0x0530, 0x058F),)),
    ("Hebrew", ((0x05D0, 0x05EA),)),
    ("Arabic", ((0x0620, 0x06FF), (0xFE70, 0xFEFF))),
    ("NKo", ((0x07C0, 0x07FF),)),
    ("Lao", ((0x0E80, 0x0EFF),)),
    ("Georgian", ((0x10A0, 0x10FF), (0x2D00, 0x2D2F))),
    ("Canadian_Syllabics", ((0x1400, 0x167F),)),
    ("Ogham", ((0x1680, 0x169F),)),
    ("Tifinagh", ((0x2D30, 0x2D7F),)),
    ("Lisu", ((0xA4D0, 0xA4FF),)),
    ("Arrows", ((0x2190, 0x21FF), (0x27F0, 0x27FF), (0x2900, 0x297F))),
    ("Math_Operators", ((0x2200, 0x22FF), (0x2A00, 0x2AFF))),
    ("Geometric_Shapes", ((0x25A0, 0x25FF), (0x2B00, 0x2BFF))),
    ("Dingbats", ((0x2600, 0x26FF), (0x2700, 0x27BF))),
    ("Yijing", ((0x4DC0, 0x4DFF), (0x1D300, 0x1D35F))),
)

# Splits by alphabet (the Omniglot background/evaluation idea): disjoint scripts.
SPLIT_ALPHABETS = {
    "val": ("Hebrew", "NKo", "Ogham", "Yijing"),
    "test": ("Armenian", "Georgian", "Tifinagh", "Lisu", "Dingbats"),
}

FACES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
         "DejaVuSans-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
         "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf", "DejaVuSansMono.ttf",
         "DejaVuSansMono-Bold.ttf")
_KEPT_CATEGORIES = ("L", "N", "S")
_FONT_SIZES = (44, 52, 60)
_SIGNATURE_SIZE = 16
_MERGE_DISTANCE = 0.06  # RMS difference of normalized 16x16 renderings below which glyphs merge.
_CANVAS = 2 * IMAGE_SIZE  # render at 2x, then box-filter down: anti-aliased strokes.
_OUTLINE_SIZE = 48  # v2's font size: the drawer sets the character's size on the page
_CHUNK = 50  # classes per parallel rendering job, at most


def split_of(alphabet):
  """The split ('train', 'val' or 'test') that holds `alphabet`."""
  for split, alphabets in SPLIT_ALPHABETS.items():
    if alphabet in alphabets:
      return split
  return "train"


def _font_path(face):
  return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", face)


@functools.lru_cache(maxsize=None)
def _charmap(face):
  return frozenset(ft2font.FT2Font(_font_path(face)).get_charmap())


@functools.lru_cache(maxsize=None)
def _font(face, size):
  return ImageFont.truetype(_font_path(face), size)


def _render_crop(char, face, size, stroke):
  """The character drawn white on black and cropped to its ink, or None if it has none."""
  canvas = Image.new("L", (3 * size, 3 * size), 0)
  ImageDraw.Draw(canvas).text((1.5 * size, 1.5 * size), char, font=_font(face, size),
                              fill=255, anchor="mm", stroke_width=stroke, stroke_fill=255)
  box = canvas.getbbox()
  return canvas.crop(box) if box else None


def _signature(crop):
  """A 16x16 rendering with the glyph fitted to the box, aspect ratio kept, as floats."""
  w, h = crop.size
  scale = _SIGNATURE_SIZE / max(w, h)
  small = crop.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
  out = Image.new("L", (_SIGNATURE_SIZE, _SIGNATURE_SIZE), 0)
  out.paste(small, ((_SIGNATURE_SIZE - small.size[0]) // 2,
                    (_SIGNATURE_SIZE - small.size[1]) // 2))
  return np.asarray(out, np.float32).ravel() / 255.0


def _candidates():
  """[(alphabet, char)] for every drawable character of every alphabet, in table order."""
  sans = _charmap(FACES[0])
  out = []
  for alphabet, ranges in ALPHABETS:
    for lo, hi in ranges:
      for code in range(lo, hi + 1):
        char = chr(code)
        if code in sans and unicodedata.category(char)[0] in _KEPT_CATEGORIES:
          out.append((alphabet, char))
  return out


def _find(parent, i):
  while parent[i] != i:
    parent[i] = parent[parent[i]]
    i = parent[i]
  return i


def glyph_classes():
  """Groups the candidate characters into classes, merging near-duplicates.

  Two characters are merged when their normalized DejaVu Sans renderings differ by less
  than an RMS of 0.06 (Latin A, Greek Alpha and Cyrillic A become one class). A merged
  class belongs to the alphabet of its first member in table order, so look-alikes never
  straddle two splits.

  Returns:
    A list of (alphabet, tuple of member characters), in table order.
  """
  kept, signatures = [], []
  for alphabet, char in _candidates():
    crop = _render_crop(char, FACES[0], 48, 0)
    if crop is not None and min(crop.size) > 0:
      kept.append((alphabet, char))
      signatures.append(_signature(crop))
  sig = np.stack(signatures)
  sq = (sig ** 2).sum(1)
  dist2 = (sq[:, None] + sq[None, :] - 2.0 * sig @ sig.T) / sig.shape[1]
  parent = list(range(len(kept)))
  for i, j in zip(*np.nonzero(np.triu(dist2 < _MERGE_DISTANCE ** 2, k=1))):
    ri, rj = _find(parent, int(i)), _find(parent, int(j))
    if ri != rj:
      parent[max(ri, rj)] = min(ri, rj)
  members = {}
  for i in range(len(kept)):
    members.setdefault(_find(parent, i), []).append(kept[i][1])
  return [(kept[root][0], tuple(chars)) for root, chars in sorted(members.items())]


def _faces_for(char):
  return [f for f in FACES if ord(char) in _charmap(f)]


def _affine(rng, crop_size):
  """PIL affine coefficients mapping output pixels to crop pixels for one random drawer."""
  w, h = crop_size
  extent = rng.uniform(0.55, 0.85) * _CANVAS / max(w, h)
  aspect = np.exp(rng.uniform(-0.15, 0.15))
  theta = np.deg2rad(rng.uniform(-15, 15))
  shear = rng.uniform(-0.25, 0.25)
  rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
  forward = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag(
      [extent * aspect, extent / aspect])
  inverse = np.linalg.inv(forward)
  center_out = _CANVAS / 2 + rng.uniform(-3, 3, size=2)
  offset = np.array([w / 2, h / 2]) - inverse @ center_out
  return (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])


def check_version(version):
  """`version` if it is one of VERSIONS, else ValueError naming the setting and the versions."""
  if isinstance(version, bool) or version not in VERSIONS:
    raise ValueError(f"load_splits.glyphs_version = {version!r} (--glyphs_version of "
                     f"tools/prepare_data.py, glyphs_version= of load_dataset): glyphs has "
                     f"versions {', '.join(map(str, VERSIONS))} (2, the default: handwritten "
                     f"strokes; 1: the printed characters of earlier results)")
  return version


def render_instance(chars, rng):
  """Version 1: one 28x28 uint8 image (black on white) of a class printed by a random drawer."""
  while True:
    char = chars[rng.integers(len(chars))]
    faces = _faces_for(char)
    face = faces[rng.integers(len(faces))]
    size = _FONT_SIZES[rng.integers(len(_FONT_SIZES))]
    crop = _render_crop(char, face, size, int(rng.integers(0, 2)))
    if crop is not None:
      break
  image = crop.transform((_CANVAS, _CANVAS), Image.AFFINE, _affine(rng, crop.size),
                         resample=Image.BILINEAR)
  return 255 - np.asarray(image.reduce(_CANVAS // IMAGE_SIZE), np.uint8)


def draw_instance(chars, rng):
  """Version 2: one 28x28 uint8 image (black on white) of a class handwritten by a random
  drawer: a member character in a random face, redrawn by `handwriting.draw`."""
  while True:
    char = chars[rng.integers(len(chars))]
    faces = _faces_for(char)
    crop = _render_crop(char, faces[rng.integers(len(faces))], _OUTLINE_SIZE, 0)
    image = None if crop is None else handwriting.draw(np.asarray(crop), rng)
    if image is not None:
      return image


_DRAWERS = {1: render_instance, 2: draw_instance}


def render_class(chars, seed, index, instances=INSTANCES_PER_CLASS, version=VERSION):
  """The `instances` images [n, 28, 28, 1] of class number `index`, drawn from (seed, index)
  by glyphs version `version`."""
  draw = _DRAWERS[check_version(version)]
  rng = np.random.default_rng([seed, index])
  return np.stack([draw(chars, rng) for _ in range(instances)])[..., None]


def class_name(chars):
  return "+".join(f"U+{ord(c):04X}" for c in chars)


def _render_chunk(classes, first_index, seed, instances, version):
  """render_class of consecutive classes numbered from `first_index` (one parallel job)."""
  return [render_class(chars, seed, first_index + i, instances, version)
          for i, (_, chars) in enumerate(classes)]


def _render_all(classes, seed, instances, version, workers):
  """Every class's images, in class order, rendered in `workers` processes (1: in this one).

  Each class draws from its own generator (seed, index), so the images do not depend on
  how classes are spread over processes. Workers are spawned, not forked: the caller may
  have started TensorFlow's threads.
  """
  size = max(1, min(_CHUNK, -(-len(classes) // workers)))
  chunks = [(classes[s:s + size], s, seed, instances, version)
            for s in range(0, len(classes), size)]
  if workers == 1:
    results = (_render_chunk(*chunk) for chunk in chunks)
    return _gathered(results, len(classes), version)
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
    jobs = [pool.submit(_render_chunk, *chunk) for chunk in chunks]
    return _gathered((job.result() for job in jobs), len(classes), version)


def _gathered(chunk_results, total, version):
  """The chunks' images concatenated in order, logging progress as each one arrives."""
  out = []
  for images in chunk_results:
    out.extend(images)
    logging.info("glyphs v%d: drawn %d / %d classes", version, len(out), total)
  return out


def build(seed=0, instances=INSTANCES_PER_CLASS, version=VERSION, workers=None,
          classes=None):
  """Renders the whole dataset (about a minute for version 2 on 2 cores).

  Args:
    seed: the drawers' seed; the same seed and version give byte-identical images.
    instances: images per class.
    version: one of VERSIONS (see the module docstring).
    workers: rendering processes (default: one per CPU core); any number gives the same
      images.
    classes: the (alphabet, member characters) classes to draw (default:
      `glyph_classes()`, all of them); class `i` of the list draws from (seed, i).

  Returns:
    A dict split -> ImageStore with 28x28x1 images, groups = alphabets.
  """
  check_version(version)
  classes = glyph_classes() if classes is None else list(classes)
  images = _render_all(classes, seed, instances, version, workers or os.cpu_count() or 1)
  per_split = {s: [] for s in store_lib.SPLITS}
  for (alphabet, chars), class_images in zip(classes, images):
    per_split[split_of(alphabet)].append((class_name(chars), alphabet, class_images))
  return {s: store_lib.ImageStore.from_classes(c) for s, c in per_split.items()}
