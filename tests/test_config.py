"""Config precedence, validation, and errors that name the key."""

import pytest
import yaml

from upo.config import ConfigError, UPOConfig, load_config


def test_defaults_follow_the_method_spec():
    cfg = UPOConfig()
    assert (cfg.method, cfg.pref_loss, cfg.beta, cfg.aux_coef, cfg.eta, cfg.max_weight, cfg.tau, cfg.aux_logp) == (
        "upo", "kto", 0.1, 1.0, 1.0, 20.0, 0.7, "mean"
    )


def test_precedence_defaults_file_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"beta": 0.2, "method": "dpo", "rewards": {"readability": 0.05}}))
    cfg = load_config(path, {"beta": "0.3"})
    assert cfg.beta == 0.3  # flag beats file
    assert cfg.method == "dpo"  # file beats default
    assert cfg.tau == 0.7  # default
    assert cfg.rewards == {"readability": 0.05}


def test_unknown_key_in_file_is_an_error_with_suggestion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("bta: 0.2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'bta' \(did you mean 'beta'\?\)"):
        load_config(path)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("beta", "abc", "'beta' must be a number"),
        ("batch_size", "2.5", "'batch_size' must be an integer"),
        ("lora", "maybe", "'lora' must be true or false"),
        ("method", "ppo", "method must be one of"),
        ("tau", "1.5", "tau must be in"),
        ("rewards", "readability=high", "weight of rewards.readability must be a number"),
        ("max_prompt_length", "600", "must be smaller than max_length"),
    ],
)
def test_ill_typed_values_are_errors(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, {key: value})


def test_cli_style_values_are_coerced():
    cfg = load_config(None, {"lora": "true", "max_steps": "null", "rewards": "readability=0.05,profanity=0.95",
                             "lora_target_modules": "q_proj,v_proj", "eval_steps": "10"})
    assert cfg.lora is True and cfg.max_steps is None and cfg.eval_steps == 10
    assert cfg.rewards == {"readability": 0.05, "profanity": 0.95}
    assert cfg.lora_target_modules == ["q_proj", "v_proj"]


def test_user_reward_names_keep_their_colon():
    cfg = load_config(None, {"rewards": "mypkg.scorers:polite=0.5"})
    assert cfg.rewards == {"mypkg.scorers:polite": 0.5}


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, {"beta": "0.25", "rewards": "length=2"})
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_example_configs_load():
    from pathlib import Path

    from upo.frontier.sweep import load_sweep

    for path in sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml")):
        if "base" in yaml.safe_load(path.read_text()):  # a frontier sweep: a base config and its points
            for quick in (False, True):
                sweep = load_sweep(path, quick=quick)
                assert sweep.points and str(sweep.output_dir).startswith("runs/")
            continue
        cfg = load_config(path)
        assert cfg.dataset and cfg.output_dir.startswith("runs/")
