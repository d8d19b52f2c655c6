"""Redraws a printed character the way a hand draws it (the strokes of glyphs v2).

Omniglot's characters were drawn online with a mouse by 20 people each, saved as 105x105
1-bit images and shrunk to 28x28 with an anti-aliasing filter. A font rendering differs in
everything a network can latch onto: thick strokes of exact, even width; perfectly straight
lines and arcs; one shape per face. `draw` turns a font rendering into an Omniglot-like
image in four steps, each with a well-kept library:

  1. Pose and distortion, one coordinate map per drawer (`scipy.ndimage.map_coordinates`):
     the drawer's scale (the character's longest side follows Omniglot's distribution of
     ink bounding boxes), aspect, rotation, slant and position, plus two smooth random
     displacement fields (Gaussian-filtered white noise, `scipy.ndimage.gaussian_filter`):
     a coarse one that bends the whole shape and a fine one that makes lines wobble.
  2. The warped shape reduced to its centre line (`skimage.morphology.skeletonize`): the
     path a pen would follow, whatever the font's stroke weight.
  3. The centre line redrawn with a round pen of Omniglot's stroke width that varies
     slowly along the stroke: every pixel within the local pen radius of the path is ink
     (`scipy.ndimage.distance_transform_edt`), black on white and binary at 105x105 like
     Omniglot's files.
  4. Shrunk to 28x28 by the same Lanczos resize the Omniglot reader applies
     (`images.to_array`).

Every random choice comes from the generator passed in, so a seed gives the same images.
"""

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import morphology

from tf_metanas.data import images as images_lib

CANVAS = 105  # Omniglot's drawing size in pixels
IMAGE_SIZE = 28
# The longest side of the font's bounding box on the canvas, as a fraction of it. Omniglot's
# ink boxes (background subsets, through the library's reader) have a longest side of
# 13 / 18 / 24 of 28 pixels at the 5th / 50th / 95th percentile; these settings give the
# drawn characters 13 / 18 / 23 (the pen and the distortions add to the font's box).
_SIDE_MEAN, _SIDE_STD, _SIDE_RANGE = 0.64, 0.095, (0.44, 0.82)
_CENTER_STD = 0.055  # of the canvas: Omniglot's ink boxes are centred +- 1.5 of 28 pixels
_PEN_RADIUS = (2.2, 3.0)  # pixels at 105: Omniglot strokes are about 5.5 pixels wide
_PEN_VARIATION = 0.18  # relative, slowly varying along the stroke
_COARSE_SIGMA, _COARSE_SHIFT = 14.0, 0.022  # smooth bend of the whole shape
_FINE_SIGMA, _FINE_SHIFT = 3.0, 0.6  # wobble of the lines, in pixels at 105
# Where the warped rendering counts as ink: below one half, so that thin font strokes
# shrunk by the drawer's scale stay connected.
_INK_LEVEL = 0.3
_GRID = 3.0  # canvas pixels between the points where random fields are drawn


def _noise(rng, count, sigma):
  """`count` smooth random fields [count, g, g] of unit std on a grid `_GRID` canvas pixels
  apart: white noise filtered by a Gaussian of `sigma` canvas pixels."""
  size = int(np.ceil(CANVAS / _GRID))
  field = ndimage.gaussian_filter(rng.standard_normal((count, size, size)),
                                  (0, sigma / _GRID, sigma / _GRID), mode="wrap")
  return field / field.std(axis=(1, 2), keepdims=True)


def _to_canvas(field):
  """A grid field [g, g] interpolated to the canvas (Pillow's bicubic resize): smoothing
  on the coarse grid and interpolating costs a fraction of filtering at full size."""
  image = Image.fromarray(field.astype(np.float32)).resize((CANVAS, CANVAS), Image.BICUBIC)
  return np.asarray(image, np.float64)


def _pose(rng, glyph_shape):
  """(2x2 matrix, offset) mapping canvas (row, col) to glyph (row, col) for one drawer."""
  h, w = glyph_shape
  side = np.clip(rng.normal(_SIDE_MEAN, _SIDE_STD), *_SIDE_RANGE) * CANVAS
  aspect = np.exp(rng.uniform(-0.15, 0.15))
  theta = np.deg2rad(rng.uniform(-6, 6))
  slant = rng.uniform(-0.2, 0.2)
  scale = side / max(h, w)
  rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
  forward = rotation @ np.array([[1.0, 0.0], [slant, 1.0]]) @ np.diag(
      [scale / aspect, scale * aspect])
  inverse = np.linalg.inv(forward)
  center = CANVAS / 2 + rng.normal(0, _CENTER_STD * CANVAS, size=2)
  return inverse, np.array([h / 2, w / 2]) - inverse @ center


def _warp(glyph, rng):
  """The glyph (float, ink = 1) posed and distorted onto the canvas by one drawer."""
  inverse, offset = _pose(rng, glyph.shape)
  shift = (_COARSE_SHIFT * CANVAS * _noise(rng, 2, _COARSE_SIGMA)
           + _FINE_SHIFT * _noise(rng, 2, _FINE_SIGMA))
  displaced = (np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float64)
               + np.stack([_to_canvas(s) for s in shift]))
  source = np.tensordot(inverse, displaced, axes=1) + offset[:, None, None]
  return ndimage.map_coordinates(glyph, source, order=1, cval=0.0)


def _pen(path, rng):
  """Ink (bool) wherever a round pen of slowly varying radius passes along `path`."""
  radius = rng.uniform(*_PEN_RADIUS) * (
      1.0 + _PEN_VARIATION * _to_canvas(_noise(rng, 1, _COARSE_SIGMA / 2)[0]))
  return ndimage.distance_transform_edt(~path) <= radius


def draw(glyph, rng):
  """One 28x28 uint8 Omniglot-like image (black on white) of a font rendering.

  Args:
    glyph: uint8 [h, w], the character white on black, cropped to its ink.
    rng: numpy Generator: the drawer.

  Returns:
    uint8 [28, 28], or None if the drawer's distortion left no stroke.
  """
  warped = _warp(glyph.astype(np.float64) / 255.0, rng)
  path = morphology.skeletonize(warped > _INK_LEVEL)
  if not path.any():
    return None
  paper = Image.fromarray(np.where(_pen(path, rng), 0, 255).astype(np.uint8))
  return images_lib.to_array(paper, IMAGE_SIZE)[..., 0]
