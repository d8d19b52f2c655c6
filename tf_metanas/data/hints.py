"""The commands that data error messages suggest, spelled as the tools accept them.

`tools/prepare_data.py` takes flags (`--dataset`, `--data_dir`, `--source`, `--download`,
...). `tools/train.py` takes only `--gin_file`, `--gin_param`, `--model_dir` and the
distribution flags: a dataset option there is a gin binding of `load_splits`
(`tf_metanas.train.load_splits`), whose keyword arguments go to `registry.load_dataset`.
Commands are quoted in backticks, with shell quoting, so they can be pasted as they are.
"""

import json
import shlex

PREPARE_DATA = "python tools/prepare_data.py"
TRAIN = "python tools/train.py"
_TFDS_DATASETS = {"omniglot": "omniglot", "cifar100": "fc100", "mini_imagenet": "mini_imagenet"}


def prepare_command(dataset, **flag_values):
  """`python tools/prepare_data.py --dataset=<dataset> ...`, one flag per keyword.

  True gives `--flag`, None or False leaves the flag out, anything else `--flag=value`.
  """
  args = [f"--dataset={dataset}"]
  for name, value in flag_values.items():
    if value is True:
      args.append(f"--{name}")
    elif value is not None and value is not False:
      args.append(f"--{name}={value}")
  return " ".join([PREPARE_DATA] + [shlex.quote(arg) for arg in args])


def _gin_literal(value):
  if isinstance(value, str):
    return json.dumps(value)
  return repr(value)


def gin_params(**bindings):
  """`--gin_param='load_splits.<name> = <value>'` for each keyword, for tools/train.py."""
  return " ".join(
      f"--gin_param={shlex.quote(f'load_splits.{name} = {_gin_literal(value)}')}"
      for name, value in bindings.items())


def _both_tools(dataset, **options):
  return (f"`{prepare_command(dataset, **options)}`, or add `{gin_params(**options)}` to "
          f"your `{TRAIN}` command")


def how_to_download(dataset):
  """How to let TFDS download `dataset` ("omniglot" or "fc100"), as a sentence."""
  return (f"To let TFDS download it, run {_both_tools(dataset, source='tfds', download=True)}"
          " (download=True, source='tfds' from Python).")


def how_to_prepare_tfds(tfds_name):
  """What to do when TFDS `tfds_name` is not prepared, as a sentence."""
  dataset = _TFDS_DATASETS.get(tfds_name, tfds_name)
  if dataset == "mini_imagenet":
    first = ("To prepare it from your mini-ImageNet files in DIR, run "
             f"{_both_tools(dataset, source='tfds', data_dir='DIR')}.")
  else:
    first = how_to_download(dataset)
  return (f"{first} If another TFDS directory has it, point to it with "
          f"`{prepare_command(dataset, source='tfds', tfds_dir='TFDS_DIR')}` or "
          f"`{gin_params(tfds_dir='TFDS_DIR')}` (tfds_dir= from Python).")
