"""A contact sheet: a grid of example images, one row per class, as a PNG."""

import pathlib

import numpy as np
from PIL import Image


def contact_sheet(store, path, num_classes=16, per_class=10, seed=0, scale=2):
  """Writes a PNG with `per_class` images of `num_classes` random classes of `store`.

  Returns:
    The path written.
  """
  rng = np.random.default_rng(seed)
  classes = rng.choice(store.num_classes, min(num_classes, store.num_classes), replace=False)
  rows = []
  for c in sorted(classes):
    indices = store.class_indices[c][:per_class]
    row = np.concatenate(list(store.images[indices]), axis=1)
    pad = per_class * store.image_shape[1] - row.shape[1]
    rows.append(np.pad(row, ((1, 1), (0, pad), (0, 0)), constant_values=128))
  sheet = np.concatenate(rows, axis=0)
  image = Image.fromarray(sheet[..., 0] if sheet.shape[-1] == 1 else sheet)
  image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path)
  return path
