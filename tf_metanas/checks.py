"""Checks of configured values at construction, each error naming the binding at fault."""

import math
import numbers


class ConfigValueError(ValueError):
  """A configured value has the wrong type or is out of range."""


def count(binding, value, minimum=1, zero_means=None):
  """`value` as an int >= `minimum`; else ConfigValueError naming `binding` (and what 0
  means where 0 is allowed)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ConfigValueError(f"{binding} = {value!r}: expected a whole number >= {minimum}")
  if value < minimum:
    raise ConfigValueError(f"{binding} = {value}: must be >= {minimum}"
                           + (f" (0 {zero_means})" if zero_means else ""))
  return int(value)


def number(binding, value, minimum=0.0):
  """`value` as a finite float >= `minimum`; else ConfigValueError naming `binding`."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
    raise ConfigValueError(f"{binding} = {value!r}: expected a finite number >= {minimum}")
  if value < minimum:
    raise ConfigValueError(f"{binding} = {value}: must be >= {minimum}")
  return float(value)
