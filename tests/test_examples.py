"""The shipped example configs: each training config is a valid upo config, and each TRL config
translates with `upo from-trl` (nothing is trained or loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from upo.config import load_config
from upo.trl_config import translate_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["upo_hh.yaml", "dpo_hh.yaml", "simpo_hh.yaml"])
def test_a_training_example_is_a_valid_config(name):
    load_config(str(EXAMPLES / name), {})


@pytest.mark.parametrize(("name", "method"), [("dpo.yaml", "dpo"), ("orpo.yaml", "orpo")])
def test_a_trl_example_translates(name, method):
    out = translate_file(EXAMPLES / "trl" / name, method)
    assert out.values["method"] == method and out.values["output_dir"].startswith("Qwen2-0.5B")
