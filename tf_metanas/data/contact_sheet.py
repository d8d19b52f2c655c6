"""A contact sheet: a grid of example images, one row per class, as a PNG; optionally
beside another dataset's grid, to compare them by eye (glyphs beside Omniglot)."""

import pathlib

import numpy as np
from PIL import Image

_GAP = 8  # gray pixels between two datasets' grids


def _grid(store, num_classes, per_class, seed):
  """[rows, cols, C] uint8: `per_class` images of `num_classes` random classes, a row each."""
  rng = np.random.default_rng(seed)
  classes = rng.choice(store.num_classes, min(num_classes, store.num_classes), replace=False)
  rows = []
  for c in sorted(classes):
    indices = store.class_indices[c][:per_class]
    row = np.concatenate(list(store.images[indices]), axis=1)
    pad = per_class * store.image_shape[1] - row.shape[1]
    rows.append(np.pad(row, ((1, 1), (0, pad), (0, 0)), constant_values=128))
  return np.concatenate(rows, axis=0)


def _side_by_side(left, right):
  height = max(left.shape[0], right.shape[0])
  pad = lambda grid: np.pad(grid, ((0, height - grid.shape[0]), (0, 0), (0, 0)),
                            constant_values=128)
  gap = np.full((height, _GAP, left.shape[2]), 128, np.uint8)
  return np.concatenate([pad(left), gap, pad(right)], axis=1)


def contact_sheet(store, path, num_classes=16, per_class=10, seed=0, scale=2, beside=None):
  """Writes a PNG with `per_class` images of `num_classes` random classes of `store`; with
  `beside` (a store of the same image shape), that store's grid to the right of it.

  Returns:
    The path written.
  """
  sheet = _grid(store, num_classes, per_class, seed)
  if beside is not None:
    sheet = _side_by_side(sheet, _grid(beside, num_classes, per_class, seed))
  image = Image.fromarray(sheet[..., 0] if sheet.shape[-1] == 1 else sheet)
  image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path)
  return path
