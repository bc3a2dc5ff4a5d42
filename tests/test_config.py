"""Config precedence, validation, and errors that name the key."""

import re

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
    path.write_text(yaml.safe_dump({"beta": 0.2, "method": "modpo", "rewards": {"readability": 0.05}}))
    cfg = load_config(path, {"beta": "0.3"})
    assert cfg.beta == 0.3  # flag beats file
    assert cfg.method == "modpo"  # file beats default
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
    steered = load_config(None, {"lora": "true", "rewards": "length=1", "steer_aux_coefs": "0,1,3",
                                 "steer_by": "adapter", "steer_aux_weights": "2,1,1"})
    assert steered.steer_aux_coefs == [0.0, 1.0, 3.0] and steered.steer_aux_weights == [2, 1, 1]
    with pytest.raises(ConfigError, match="steer_aux_weights"):
        load_config(None, {"lora": "true", "rewards": "length=1", "steer_aux_coefs": "0,1,3", "steer_by": "adapter",
                           "steer_aux_weights": "2,1.5,1"})


def test_rewards_given_as_a_json_or_yaml_mapping_on_the_command_line():
    assert load_config(None, {"rewards": '{"safety": 0.95, "readability": 0.05}'}).rewards == {
        "safety": 0.95, "readability": 0.05}
    assert load_config(None, {"rewards": "{length: 2}"}).rewards == {"length": 2.0}
    with pytest.raises(ConfigError, match="'rewards' must be name=weight,name=weight or a mapping"):
        load_config(None, {"rewards": '{"safety": '})


def test_a_key_given_twice_is_an_error_not_the_last_one_silently(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: x\nrewards:\n  safety: 1\n  safety: 0.5\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not valid YAML: the key 'safety' is given twice\n.*line 4"):
        load_config(path)
    with pytest.raises(ConfigError, match="'rewards' names 'length' twice"):
        load_config(None, {"rewards": "length=1,length=2"})
    with pytest.raises(ConfigError, match="the key 'a' is given twice"):
        load_config(None, {"steer_reward_mixes": "{a: {length: 1}, a: {length: 2}}"})
    path.write_text("base: &b {length: 1, safety: 2}\nrewards:\n  <<: *b\n  safety: 3\n")  # a merge key may be overridden
    from upo.config_values import read_yaml_mapping

    assert read_yaml_mapping(path)["rewards"] == {"length": 1, "safety": 3}
    nested = "defs: {a: &a {x: 1, y: 2}, b: &b {<<: *a, x: 3}}\nc: {<<: *b, z: 1}\n"  # merges of merges
    path.write_text(nested)
    assert read_yaml_mapping(path) == yaml.safe_load(nested)


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


# ---- numeric domains: every number a key may take is stated, NaN and inf never pass ---------------


def test_every_numeric_key_states_its_domain():
    from upo.domains import field_domains
    from upo.evaluation.config import EvalConfig
    from upo.rm.config import RMConfig

    for cls in (UPOConfig, RMConfig, EvalConfig):
        domains = field_domains(cls)
        assert "batch_size" in domains or "prompts" in domains  # the numeric fields are found
        # reward weights may be negative (a penalty): only finiteness is checked for them
        missing = [k for k, d in domains.items() if d is None and k != "rewards"]
        assert not missing, f"{cls.__name__}: numeric keys without a domain: {missing}"


def test_interval_membership_and_wording():
    from upo.domains import Interval

    half_open = Interval("[0, 1)")
    assert 0.0 in half_open and 0.5 in half_open and 1.0 not in half_open and -0.1 not in half_open
    assert float("nan") not in half_open
    assert 1.0 in Interval("(0, 1]") and 0.0 not in Interval("(0, 1]")
    assert (str(Interval("(0, inf)")), str(Interval("[0, inf)")), str(half_open)) == ("> 0", ">= 0", "in [0, 1)")
    assert str(Interval("(-inf, inf)")) == "any number" and -1e9 in Interval("(-inf, inf)")


def test_the_config_knows_the_losses_f_divergences():
    from upo.config import F_DIVERGENCES
    from upo.losses import F_DIVERGENCES as IN_LOSSES

    assert F_DIVERGENCES == IN_LOSSES


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_grad_norm", "-1", "max_grad_norm must be > 0, got -1.0"),  # would turn clipping into gradient ascent
        ("desirable_weight", "-1", "desirable_weight must be > 0"),  # would invert KTO
        ("value_lr", "-1e-3", "value_lr must be > 0"),  # the value head would ascend
        ("lora_alpha", "0", "lora_alpha must be > 0, got 0"),  # LoRA would train nothing
        ("max_examples", "-3", "max_examples must be > 0, got -3"),  # would keep all but 3
        ("logging_steps", "0", "logging_steps must be > 0"),  # crashed mid-run (modulo by zero)
        ("save_total_limit", "-1", "save_total_limit must be > 0"),
        ("warmup_steps", "-5", "warmup_steps must be >= 0"),
        ("lora_dropout", "1.0", r"lora_dropout must be in \[0, 1\)"),
        ("seed", "-1", "seed must be in"),
        ("beta", "nan", "beta must be a finite number, got nan"),
        ("eta", "inf", "eta must be a finite number, got inf"),
        ("relabel_margin", "nan", "relabel_margin must be a finite number"),
        ("aux_coef", "-inf", "aux_coef must be a finite number"),
        ("rewards", "length=nan", "rewards.length must be a finite number"),
    ],
)
def test_numbers_outside_their_domain_are_refused_with_the_key_named(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, {key: value})


@pytest.mark.parametrize(
    ("cls_path", "key", "value", "message"),
    [
        ("upo.rm.config:load_rm_config", "max_grad_norm", "-1", "max_grad_norm must be > 0"),
        ("upo.rm.config:load_rm_config", "learning_rate", "nan", "learning_rate must be a finite number"),
        ("upo.rm.config:load_rm_config", "eval_fraction", "inf", "eval_fraction must be a finite number"),
        ("upo.evaluation.config:load_eval_config", "temperature", "nan", "temperature must be a finite number"),
        ("upo.evaluation.config:load_eval_config", "top_p", "0", r"top_p must be in \(0, 1\]"),
        ("upo.evaluation.config:load_eval_config", "split_seed", "-2", "split_seed must be in"),
        ("upo.evaluation.config:load_eval_config", "beta", "inf", "beta must be a finite number"),
    ],
)
def test_rm_and_eval_configs_check_their_domains_too(cls_path, key, value, message):
    import importlib

    module, name = cls_path.split(":")
    with pytest.raises(ConfigError, match=message):
        getattr(importlib.import_module(module), name)(None, {key: value})


def test_a_bad_number_is_refused_before_anything_loads(tmp_path, capsys):
    """The config is checked before the model is looked up: the error is the number's, not the path's."""
    from upo.cli import main

    assert main(["train", "--model", str(tmp_path / "missing"), "--dataset", "x.jsonl", "--beta", "nan"]) == 2
    err = capsys.readouterr().err
    assert "beta must be a finite number" in err and "missing" not in err


@pytest.mark.parametrize("method", ["dpo", "ipo", "kto", "sft", "csft", "oppo"])
def test_rewards_given_to_a_method_that_ignores_them_are_refused(method):
    with pytest.raises(ConfigError, match=f"rewards are set \\(length\\) but method '{method}' does not use them"):
        UPOConfig(method=method, rewards={"length": 1.0})
    UPOConfig(method=method, rewards={"length": 1.0}, relabel=True)  # relabel re-ranks the pairs by them
    UPOConfig(method=method)


@pytest.mark.parametrize("method", ["upo", "aoppo", "modpo", "alol", "drov"])
def test_methods_that_use_rewards_take_them(method):
    assert UPOConfig(method=method, rewards={"length": 1.0}).rewards == {"length": 1.0}


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        (dict(lora_r=8), "lora_r (lora is false)"),
        (dict(lora_alpha=8, merge_lora=False), "lora_alpha (lora is false); merge_lora (lora is false)"),
        (dict(relabel_margin=2.0), "relabel_margin (relabel is false)"),
        (dict(eval_steps=10, eval_fraction=0.0), "eval_steps (no held-out data"),
        (dict(eval_steps=10, heldout_eval=False), "eval_steps (heldout_eval is false"),
        (dict(save_total_limit=5), "save_total_limit (save_steps is null"),
        (dict(method="dpo", pref_loss="dpo"), "pref_loss (method 'dpo' does not read it; read by upo)"),
        (dict(method="kto", label_smoothing=0.1), "label_smoothing (method 'kto' does not read it; read by dpo, "
                                                  "robust, aot, aot_unpaired, upo with pref_loss dpo, simpo, cpo)"),
        (dict(method="orpo", simpo_gamma=1.0), "simpo_gamma (method 'orpo' does not read it; read by simpo)"),
        (dict(method="simpo", ref_model="some/model"), "ref_model (method 'simpo' uses no reference model)"),
        (dict(method="dpo", desirable_weight=2.0), "desirable_weight (method 'dpo' does not read it; read by kto, "
                                                   "apo_zero_unpaired, upo with pref_loss kto)"),
        (dict(pref_loss="dpo", undesirable_weight=2.0), "undesirable_weight (method 'upo' with pref_loss 'dpo' does "
                                                        "not read it"),
        (dict(method="dpo", aux_coef=0.5), "aux_coef (method 'dpo' does not read it; read by upo)"),
        (dict(method="kto", eta=2.0, tau=0.5), "eta (method 'kto' does not read it; read by upo); tau (method"),
        (dict(method="alol", ppo_clip=0.1), "ppo_clip (method 'alol' does not read it; read by oppo, aoppo)"),
        (dict(method="oppo", alol_clip=0.5), "alol_clip (method 'oppo' does not read it; read by alol)"),
        (dict(method="dpo", modpo_w0=2.0), "modpo_w0 (method 'dpo' does not read it; read by modpo)"),
        (dict(method="csft", beta=0.2), "beta (method 'csft' does not read it; read by dpo, ipo, hinge, robust, "
                                           "nca_pair, bco_pair, sppo_hard, apo_zero, apo_down, exo_pair, discopop, aot, "
                                           "aot_unpaired, sigmoid_norm, kto, apo_zero_unpaired, upo, simpo, cpo, orpo, oppo"),
        (dict(method="dpo", value_lr=1e-2), "value_lr (method 'dpo' has no value head)"),
        (dict(method="sft", ref_model="some/model"), "ref_model (method 'sft' uses no reference model)"),
    ],
)
def test_keys_set_but_not_read_by_the_run_are_refused(keys, named):
    with pytest.raises(ConfigError, match="set but not read by this run.*" + re.escape(named)):
        UPOConfig(**keys)


def test_every_method_accepts_the_keys_it_reads_and_refuses_the_other_method_keys():
    """Only the method-specific keys (some method reads them) are checked, against the table's
    `Method.reads`: a general key like learning_rate is every method's."""
    from upo.methods import METHODS, config_reads, method_keys

    changed = {"beta": 0.2, "label_smoothing": 0.1, "desirable_weight": 2.0, "undesirable_weight": 2.0,
               "aux_coef": 0.5, "eta": 2.0, "max_weight": 5.0, "tau": 0.5, "aux_logp": "sum", "ppo_clip": 0.1,
               "alol_clip": 0.5, "modpo_w0": 2.0, "pref_loss": "dpo", "rpo_alpha": 0.5, "simpo_gamma": 1.0,
               "cpo_alpha": 0.5, "ipo_per_token": True, "exo_epsilon": 0.01, "discopop_tau": 0.1,
               "f_divergence": "js_divergence", "f_alpha_divergence_coef": 0.3, "alphapo_alpha": -0.1,
               "loss_mix": {"simpo": 1.0, "sft": 0.5}, "cpo_loss_type": "hinge"}
    assert sorted(changed) == sorted(method_keys())
    for name, m in METHODS.items():
        for pref_loss in ("kto", "dpo", "ipo") if m.data == "pref" else ("kto",):
            own = {"pref_loss": pref_loss} if m.data == "pref" else {"loss_mix": changed["loss_mix"]} if m.mixes else {}
            reads = config_reads(m, pref_loss, own.get("loss_mix"))
            # (cpo's hinge smooths no labels: its label_smoothing is then refused, tested below)
            accepted = [k for k in reads if k not in own and not (k == "label_smoothing" and "cpo_loss_type" in reads)]
            UPOConfig(method=name, learning_rate=1e-4, **{k: changed[k] for k in accepted}, **own)
            for key in set(changed) - set(reads):
                with pytest.raises(ConfigError, match=f"{key} \\(method '{name}'"):
                    UPOConfig(method=name, **{key: changed[key]}, **{k: v for k, v in own.items() if k != key})


def test_cpo_loss_types_are_checked():
    UPOConfig(method="cpo", cpo_loss_type="ipo", alphapo_alpha=0.25)  # AlphaPO > 0 on ipo's per-token means
    with pytest.raises(ConfigError, match=r"label_smoothing \(cpo_loss_type hinge does not smooth labels"):
        UPOConfig(method="cpo", cpo_loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(ConfigError, match="alphapo_alpha 0.25 with cpo"):
        UPOConfig(method="cpo", cpo_loss_type="hinge", alphapo_alpha=0.25)
    with pytest.raises(ConfigError, match="cpo_loss_type"):
        UPOConfig(method="cpo", cpo_loss_type="simpo")
    UPOConfig(method="mix", loss_mix={"cpo": 1.0, "simpo": 1.0}, cpo_loss_type="hinge", label_smoothing=0.1)  # simpo's


def test_keys_read_by_the_run_are_accepted():
    UPOConfig(lora=True, lora_r=8, merge_lora=False)
    UPOConfig(method="dpo", relabel=True, relabel_margin=2.0, rewards={"length": 1.0})
    UPOConfig(eval_steps=10, save_steps=5, save_total_limit=5, value_lr=1e-2, pref_loss="dpo")
    UPOConfig(method="dpo", eval_fraction=0.0, eval_dataset="held.jsonl", eval_steps=10, ref_model="some/model")



@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (dict(method="upo", lora=True, use_dora=True, steer_aux_coefs=[0, 1], steer_by="adapter"),
         "steer_by: adapter combines two plain LoRA adapters into one .* which use_dora would not be"),
        (dict(method="upo", lora=True, lora_modules_to_save=["norm"], steer_aux_coefs=[0, 1], steer_by="adapter"),
         "which lora_modules_to_save would not be"),
        (dict(method="csft", lora=True, lora_modules_to_save=["lm_head"]), "lora_modules_to_save with new control tokens"),
        (dict(method="cpo", alphapo_alpha=0.2), "alphapo_alpha 0.2 with cpo"),
        (dict(method="mix", loss_mix={"cpo": 1.0}, alphapo_alpha=0.2), "alphapo_alpha 0.2 with cpo"),
    ],
)
def test_lora_variants_and_alphapo_settings_that_cannot_work_are_refused(keys, message):
    with pytest.raises(ConfigError, match=message):
        UPOConfig(**keys)


def test_label_smoothing_is_refused_where_only_a_cpo_term_of_another_loss_type_reads_it():
    from upo.frontier.sweep import config_keys

    for mix in ({"cpo": 1.0, "sft": 1.0}, {"cpo": 1.0}):
        with pytest.raises(ConfigError, match=r"label_smoothing \(cpo_loss_type ipo does not smooth labels"):
            UPOConfig(method="mix", loss_mix=mix, cpo_loss_type="ipo", label_smoothing=0.1)
    base = {"label_smoothing": 0.1, "cpo_loss_type": "hinge"}
    assert "label_smoothing" not in config_keys(base, {"method": "cpo"})  # the base's, meant for its dpo points
    assert config_keys(base, {"method": "dpo"})["label_smoothing"] == 0.1
