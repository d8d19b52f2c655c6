"""What a resumed run changes in its configuration: the stored operative gin config against
the new one, binding by binding.

A run may resume with other "safe" bindings: how long it trains and how it logs, validates,
checkpoints and meta-tests (`SAFE`); the meta-training itself (data, network, learner,
seeds, ...) must be the one its checkpoints were written with.
"""

import dataclasses
import re

# Arguments that change neither the meta-training nor what its checkpoints hold: the
# Runner's, and the same of a from-scratch retraining's Runner (`FromScratch`).
SAFE = frozenset({"Runner.num_iterations", "Runner.log_every", "Runner.eval_every",
                  "Runner.eval_tasks", "Runner.test_tasks", "Runner.test_batch_size",
                  "Runner.checkpoint_every", "Runner.max_checkpoints",
                  "FromScratch.iterations", "FromScratch.eval_every", "FromScratch.eval_tasks"})


@dataclasses.dataclass(frozen=True)
class Change:
  binding: str
  stored: str
  new: str
  safe: bool

  def __str__(self):
    return f"{self.binding}: {self.stored} -> {self.new}"


def bindings(config):
  """{binding or macro: value text} of an operative config string (`gin.operative_config_str`
  output: comment lines, `import` lines, `key = value` lines, indented continuations)."""
  parsed, key = {}, None
  for line in config.splitlines():
    if not line.strip() or line.lstrip().startswith("#") or line.startswith("import "):
      continue
    if line[0].isspace() and key:
      parsed[key] += "\n" + line.strip()
    else:
      key, _, value = line.partition(" = ")
      key = key.strip()
      parsed[key] = value.strip()
  return parsed


def _is_safe_binding(key):
  """Whether `key` (scope/module.Configurable.param) is a SAFE one: unscoped, any module."""
  return "/" not in key and ".".join(key.split(".")[-2:]) in SAFE


def _is_safe(key, new, stored):
  if "." in key:
    return _is_safe_binding(key)
  # A macro: safe when every binding that reads it (in either config) is.
  readers = [k for config in (new, stored) for k, v in config.items()
             if re.search(rf"%{re.escape(key)}\b", v)]
  return all(_is_safe_binding(k) for k in readers)


def predating_bindings(config):
  """The bindings a stored operative config held implicitly because it predates them, as
  gin binding strings: a glyphs run stored before glyphs v2 (its config has no
  `load_splits.glyphs_version`) was drawn from glyphs v1. Evaluating or resuming it reads
  them with its config, so it never silently meets the new default's data."""
  stored = bindings(config)
  if (stored.get("load_splits.name") == "'glyphs'" and
      "load_splits.glyphs_version" not in stored):
    return ["load_splits.glyphs_version = 1"]
  return []


def diff(stored_config, new_config):
  """[Change] from the stored operative config to the new one, sorted by binding.

  Only bindings in both are compared: an operative config lists the configurables a process
  called (import-time defaults included), so a binding in one only means "not called
  there"; what calls another configurable shows as a change of the binding that names it
  (`Runner.network = @Conv4` -> `@SearchNetwork`).
  """
  stored = bindings("\n".join([stored_config] + predating_bindings(stored_config)))
  new = bindings(new_config)
  return [Change(key, stored[key], new[key], _is_safe(key, new, stored))
          for key in sorted(set(stored) & set(new)) if stored[key] != new[key]]
