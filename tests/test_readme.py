"""The README starts with the two commands, and CI runs the second one verbatim."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _commands():
  block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
  return block.strip().splitlines()


def test_readme_starts_with_exactly_two_commands():
  text = (ROOT / "README.md").read_text()
  assert text.index("```bash") < text.index("\n## ")
  commands = _commands()
  assert len(commands) == 2
  assert "tools/train.py --gin_file=gin_configs/experiments/metanas/quickstart.gin" in commands[0]
  assert (ROOT / "gin_configs" / "experiments" / "metanas" / "quickstart.gin").exists()
  assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
  ci = (ROOT / ".ci" / "run").read_text().splitlines()
  assert _commands()[1] in ci
