"""The pace of meta-training that progress lines report: the rate of compiled
meta-iterations and the ETA of meta-training."""


class Pace:
  """Rate: meta-iterations per second of meta-iteration time, over those since the last
  `reset` that ran a compiled graph. A meta-iteration that traced one (the first, the first
  after the warm-up ends, after a change of regime or structure) is left out, and so are
  validations, checkpoints and logging between meta-iterations. ETA: the meta-iterations
  left at that rate, plus the validations left at the last one's duration."""

  def __init__(self):
    self.seconds, self.steps, self.validation_seconds = 0.0, 0, 0.0

  def record(self, seconds, traced):
    """A meta-iteration that took `seconds`; `traced`: it traced a new graph."""
    if not traced:
      self.seconds += seconds
      self.steps += 1

  def rate(self):
    """Compiled meta-iterations per second since the last reset (None before any)."""
    return self.steps / self.seconds if self.steps and self.seconds > 0 else None

  def reset(self):
    self.seconds, self.steps = 0.0, 0

  def eta(self, steps_left, validations_left):
    """Seconds of meta-training left (None until there is a rate)."""
    rate = self.rate()
    if rate is None:
      return None
    return steps_left / rate + validations_left * self.validation_seconds
