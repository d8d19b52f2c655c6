"""The README starts with the two commands, CI runs the second one verbatim, and the flags
the README gives the training binary exist."""

import pathlib
import re
import subprocess
import sys

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


def test_flags_the_readme_gives_tools_train_exist():
  text = (ROOT / "README.md").read_text()
  blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
  used = set(re.findall(r" --(\w+)=", "\n".join(b for b in blocks if "tools/train.py" in b)))
  assert {"strategy", "worker_hosts", "task_index", "cpu_devices", "devices"} <= used
  helpfull = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--helpfull"],
                            capture_output=True, text=True, timeout=120, check=False).stdout
  for flag in used:
    assert f"--{flag}:" in helpfull, flag
