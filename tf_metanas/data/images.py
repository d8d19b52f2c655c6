"""Decoding image files into fixed-size uint8 arrays, naming the file when one is bad."""

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from tf_metanas.data import errors


def decode(data, path, size, mode):
  """Decodes encoded image bytes and resizes them.

  Args:
    data: the encoded file contents (PNG, JPEG, ...).
    path: where the bytes came from, for the error message.
    size: output height = width in pixels.
    mode: "L" (grayscale, 1 channel) or "RGB" (3 channels).

  Returns:
    uint8 array [size, size, channels], resized with a Lanczos (anti-aliasing) filter.

  Raises:
    CorruptFileError: the bytes are not a readable image.
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      image = image.convert(mode)
      return to_array(image, size)
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise errors.CorruptFileError(f"{path} is not a readable image: {e}") from e


def to_array(image, size):
  """A PIL image resized to size x size as uint8 HWC."""
  if image.size != (size, size):
    image = image.resize((size, size), Image.LANCZOS)
  array = np.asarray(image, np.uint8)
  return array[..., None] if array.ndim == 2 else array


def resize_array(array, size):
  """Resizes a uint8 HWC array (1 or 3 channels) to size x size."""
  if array.shape[0] == size and array.shape[1] == size:
    return array
  image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
  return to_array(image, size)
