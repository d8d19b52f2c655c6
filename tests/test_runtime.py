"""Binaries' TensorFlow runtime defaults: oneDNN unless the environment says otherwise."""

import os
import subprocess
import sys

import pytest

_PROBE = ("from tf_metanas.train import runtime; runtime.use_onednn_by_default(); "
          "import os, tensorflow as tf; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])")


@pytest.mark.parametrize("given, expected", [(None, "1"), ("0", "0"), ("1", "1")])
def test_onednn_default_before_tensorflow_loads(given, expected):
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
  if given is not None:
    env["TF_ENABLE_ONEDNN_OPTS"] = given
  out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                       text=True, check=True, timeout=120)
  assert out.stdout.strip().splitlines()[-1] == expected
  assert ("oneDNN custom operations are on" in out.stderr) == (expected == "1")


def test_too_late_once_tensorflow_is_loaded(monkeypatch):
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  from tf_metanas.train import runtime  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
  runtime.use_onednn_by_default()
  assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ
