"""`upo from-trl` (upo.trl_config): TRL config files translated key by key, TRL's defaults written
out, every untranslatable key refused with its line, and a translated file that trains."""

from __future__ import annotations

import pytest
import yaml

from upo.cli import main
from upo.config import ConfigError, UPOConfig, load_config
from upo.trl_config import translate, translate_file

EXAMPLE = """\
model_name_or_path: Qwen/Qwen2-0.5B-Instruct
dataset_name: trl-lib/ultrafeedback_binarized
learning_rate: 5.0e-7
num_train_epochs: 1
per_device_train_batch_size: 2
gradient_accumulation_steps: 8
eval_strategy: steps
eval_steps: 50
output_dir: Qwen2-0.5B-DPO
logging_steps: 25
push_to_hub: true
bf16: true
warmup_steps: 10
"""


def write(tmp_path, text: str, name: str = "trl.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_dpo_config_is_translated_key_by_key_with_trls_defaults(tmp_path):
    out = translate_file(write(tmp_path, EXAMPLE), "dpo")
    assert out.values == {
        "method": "dpo", "model": "Qwen/Qwen2-0.5B-Instruct", "dataset": "trl-lib/ultrafeedback_binarized",
        "learning_rate": 5e-7, "num_epochs": 1, "batch_size": 2, "gradient_accumulation_steps": 8,
        "output_dir": "Qwen2-0.5B-DPO", "logging_steps": 25, "warmup_steps": 10, "precision": "bf16",
        # TRL's defaults where upo's differ
        "lr_scheduler": "linear", "max_length": 1024, "gradient_checkpointing": True, "save_steps": 500,
        "group_by_length": False,  # TRL draws batches at random
        "max_prompt_length": 1023,  # TRL 1.16 truncates no prompt alone
        # TRL evaluates on the dataset's test split every eval_steps
        "eval_dataset": "trl-lib/ultrafeedback_binarized", "eval_split": "test", "eval_fraction": 0.0,
        "eval_steps": 50,
    }
    assert out.origins["learning_rate"] == "TRL's learning_rate (line 3)"
    assert out.origins["lr_scheduler"] == "TRL's default lr_scheduler_type: 'linear'"
    assert out.not_translated == [f"push_to_hub ({tmp_path / 'trl.yaml'}:11)"]


def test_an_empty_file_trains_with_trls_defaults_on_the_whole_split():
    """TRL 1.16's DPOConfig: lr 1e-6, linear, 3 epochs, batch 8, no evaluation (nothing held out)."""
    out = translate({}, "dpo")
    assert {k: out.values[k] for k in ("learning_rate", "lr_scheduler", "num_epochs", "batch_size", "eval_fraction",
                                       "logging_steps")} == {
        "learning_rate": 1e-6, "lr_scheduler": "linear", "num_epochs": 3, "batch_size": 8, "eval_fraction": 0.0,
        "logging_steps": 10}
    assert "eval_dataset" not in out.values and not out.errors


@pytest.mark.parametrize(
    ("trainer", "trl", "expected"),
    [
        ("dpo", {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]}, {"method": "dpo", "rpo_alpha": 0.5}),
        ("kto", {"desirable_weight": 1.33}, {"method": "kto", "desirable_weight": 1.33}),
        ("kto", {"loss_type": "apo_zero_unpaired"}, {"method": "apo_zero_unpaired"}),
        ("dpo", {"loss_type": "ipo", "beta": 0.5}, {"method": "ipo", "ipo_per_token": True, "beta": 0.5}),
        ("dpo", {"loss_type": "hinge"}, {"method": "hinge"}),
        ("dpo", {"loss_type": ["robust"], "label_smoothing": 0.1}, {"method": "robust", "label_smoothing": 0.1}),
        ("dpo", {"loss_type": "nca_pair", "label_smoothing": 0.1}, {"method": "nca_pair", "label_smoothing": None}),
        ("dpo", {"loss_type": "aot", "label_smoothing": 0.1}, {"method": "aot", "label_smoothing": 0.1}),
        ("dpo", {"loss_type": "exo_pair", "label_smoothing": "1e-3"}, {"method": "exo_pair", "exo_epsilon": 1e-3,
                                                                         "label_smoothing": None}),
        ("dpo", {"loss_type": "discopop", "discopop_tau": 0.1}, {"method": "discopop", "discopop_tau": 0.1}),
        ("dpo", {"loss_type": "apo_zero", "loss_weights": [1.0]}, {"method": "apo_zero"}),
        # MPO: several loss types, summed with their weights (upo's mix)
        ("dpo", {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]},
         {"method": "mix", "loss_mix": {"dpo": 0.8, "bco_pair": 0.2, "sft": 1.0}}),
        ("dpo", {"loss_type": ["sigmoid", "sft"], "loss_weights": [0.5, 1.0]},
         {"method": "mix", "loss_mix": {"dpo": 0.5, "sft": 1.0}, "rpo_alpha": None}),
        ("dpo", {"loss_type": ["ipo", "hinge"]}, {"method": "mix", "loss_mix": {"ipo": 1.0, "hinge": 1.0},
                                                  "ipo_per_token": True}),
        ("dpo", {"loss_type": ["sigmoid", "hinge"], "loss_weights": [1.0, 0.0]}, {"method": "dpo", "loss_mix": None}),
        ("cpo", {"cpo_alpha": 0.2}, {"method": "cpo", "cpo_alpha": 0.2}),
        ("cpo", {"loss_type": "simpo", "cpo_alpha": 0.0, "simpo_gamma": 0.8, "beta": 2.0},
         {"method": "simpo", "simpo_gamma": 0.8, "beta": 2.0}),
        ("orpo", {"beta": 0.25}, {"method": "orpo", "beta": 0.25}),
        ("cpo", {"loss_type": "simpo", "cpo_alpha": 0.0, "alpha": 0.25}, {"method": "simpo", "alphapo_alpha": 0.25}),
        ("cpo", {"alpha": "-0.5"}, {"method": "cpo", "alphapo_alpha": -0.5}),
        ("dpo", {"loss_type": ["sigmoid_norm", "sft"], "f_divergence_type": "js_divergence"},
         {"method": "mix", "f_divergence": "js_divergence"}),
        ("cpo", {"loss_type": "alphapo", "alpha": 0.25, "cpo_alpha": 1.0},
         {"method": "simpo", "alphapo_alpha": 0.25, "cpo_alpha": None}),
        ("dpo", {"lr_scheduler_type": "constant_with_warmup", "warmup_steps": 5},
         {"lr_scheduler": "constant", "warmup_steps": 5}),
        ("dpo", {"optim": "adamw_torch_fused", "fp16": True, "report_to": "none"},
         {"optimizer": "adamw", "precision": "fp16"}),
        ("dpo", {"max_steps": 30, "num_train_epochs": 2}, {"max_steps": 30}),
    ],
)
def test_each_trainer_and_setting_maps_to_its_upo_keys(trainer, trl, expected):
    out = translate(trl, trainer)
    assert not out.errors
    assert {k: out.values.get(k) for k in expected} == expected
    if trainer == "cpo" and trl.get("loss_type") == "simpo":
        assert "cpo_alpha" not in out.values  # upo's simpo has no NLL term
    if "max_steps" in trl:
        assert "num_epochs" not in out.values
    if "report_to" in trl:
        assert "report_to" not in out.values


def test_constant_schedule_drops_warmup_as_transformers_does():
    out = translate({"lr_scheduler_type": "constant", "warmup_steps": 5}, "dpo")
    assert out.values["lr_scheduler"] == "constant" and "warmup_steps" not in out.values
    assert any("constant schedule ignores warmup" in note for note in out.notes)


def test_every_untranslatable_key_is_refused_with_its_line(tmp_path):
    path = write(tmp_path, "learning_rate: 1.0e-6\nloss_type: wpo_norm\nnum_train_epochs: 1.5\nload_in_8bit: true\n"
                           "warmup_steps: 0.1\nmy_own_key: 3\nneftune_noise_alpha: 5\n")
    with pytest.raises(ConfigError) as e:
        translate_file(path, "dpo")
    message = str(e.value)
    for line, key, why in [(2, "loss_type", "wpo_norm: upo translates sigmoid, ipo, sft,"),
                           (3, "num_train_epochs", "upo trains whole epochs"),
                           (4, "load_in_8bit", "an 8-bit base is not supported"),
                           (5, "warmup_steps", "a ratio of the total steps"),
                           (6, "my_own_key", "not a key of TRL 1.16's DPOTrainer config"),
                           (7, "neftune_noise_alpha", "it always behaves as neftune_noise_alpha: None does")]:
        assert f"{path}:{line}: {key}: " in message and why in message, (key, message)


def test_dora_and_rslora_are_translated_with_use_peft():
    trl = {"use_peft": True, "lora_target_modules": ["q_proj"], "use_dora": True, "use_rslora": "true",
           "lora_modules_to_save": ["lm_head"]}
    out = translate(trl, "dpo")
    assert not out.errors and (out.values["use_dora"], out.values["use_rslora"]) == (True, True)
    assert out.values["lora_modules_to_save"] == ["lm_head"]
    plain = translate({"use_dora": True}, "dpo")
    assert "use_dora" not in plain.values and any(k.startswith("use_dora") for k in plain.not_translated)


@pytest.mark.parametrize("loss_type", ["hinge", "ipo"])
def test_cpo_hinge_and_ipo_are_translated(loss_type):
    out = translate({"loss_type": loss_type, "cpo_alpha": 0.5}, "cpo")
    assert not out.errors and out.values["method"] == "cpo" and out.values["cpo_loss_type"] == loss_type
    assert out.values["cpo_alpha"] == 0.5
    alpha = translate({"loss_type": loss_type, "alpha": 0.25}, "cpo")  # AlphaPO > 0: on ipo's per-token means only
    assert bool(alpha.errors) == (loss_type == "hinge")
    smoothed = translate({"loss_type": loss_type, "label_smoothing": 0.1}, "cpo")  # TRL warns and ignores it
    assert not smoothed.errors and "label_smoothing" not in smoothed.values
    assert any(f"TRL's CPOTrainer {loss_type} loss ignores it" in note for note in smoothed.notes)
    assert any("the NLL term (cpo_alpha)" in note for note in out.notes)


def test_ld_dpo_and_wpo_are_translated():
    """TRL's ld_alpha is upo's ld_alpha, its use_weighting upo's wpo_weighting; with sft in loss_type a note says
    TRL itself raises on that."""
    out = translate({"ld_alpha": 0.3, "use_weighting": "true"}, "dpo")
    assert not out.errors and (out.values["ld_alpha"], out.values["wpo_weighting"]) == (0.3, True)
    assert not any("raises" in note for note in out.notes)
    rpo = translate({"use_weighting": True, "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]}, "dpo")
    assert rpo.values["wpo_weighting"] is True and rpo.values["rpo_alpha"] == 0.5
    assert any("use_weighting with sft in loss_type: TRL 1.16 raises" in note for note in rpo.notes)


def test_qlora_is_translated():
    """TRL's load_in_4bit with use_peft (QLoRA): upo's load_in_4bit, its quant type and nested quantization;
    without use_peft, or with a float storage dtype (FSDP's), refused."""
    trl = {"use_peft": True, "lora_target_modules": ["q_proj"], "load_in_4bit": "true", "bnb_4bit_quant_type": "fp4",
           "use_bnb_nested_quant": True}
    out = translate(trl, "dpo")
    assert not out.errors
    assert {k: out.values.get(k) for k in ("lora", "load_in_4bit", "bnb_4bit_quant_type", "use_bnb_nested_quant")} == {
        "lora": True, "load_in_4bit": True, "bnb_4bit_quant_type": "fp4", "use_bnb_nested_quant": True}
    assert any(note.startswith("QLoRA:") for note in out.notes)
    assert any("load_in_4bit: a 4-bit base can train adapters only" in e
               for e in translate({"load_in_4bit": True}, "dpo").errors)
    assert any("bnb_4bit_quant_storage: 'bfloat16'" in e
               for e in translate({**trl, "bnb_4bit_quant_storage": "bfloat16"}, "dpo").errors)
    plain = translate({"bnb_4bit_quant_type": "fp4"}, "dpo")
    assert "bnb_4bit_quant_type" not in plain.values and any("load_in_4bit is false" in k for k in plain.not_translated)


def test_a_mix_where_trl_and_upo_would_read_label_smoothing_differently_is_refused():
    """TRL's sigmoid ignores label_smoothing and its robust reads it; upo's dpo term would read it too."""
    out = translate({"loss_type": ["sigmoid", "robust"], "label_smoothing": 0.1}, "dpo")
    assert any("label_smoothing: TRL's sigmoid loss ignores it and its robust reads it" in e for e in out.errors)
    assert not translate({"loss_type": ["hinge", "robust"], "label_smoothing": 0.1}, "dpo").errors


def test_f_divergence_is_translated_for_trls_sigmoid_only():
    out = translate({"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.3}, "dpo")
    assert not out.errors and (out.values["f_divergence"], out.values["f_alpha_divergence_coef"]) == ("alpha_divergence",
                                                                                                     0.3)
    js = translate({"f_divergence_type": "js_divergence", "f_alpha_divergence_coef": 0.3}, "dpo")
    assert js.values["f_divergence"] == "js_divergence" and "f_alpha_divergence_coef" not in js.values
    assert any(k.startswith("f_alpha_divergence_coef") for k in js.not_translated)
    for trl in ({"loss_type": "hinge", "f_divergence_type": "forward_kl"},
                {"loss_type": ["sigmoid", "bco_pair"], "f_divergence_type": "forward_kl"}):
        assert any("f_divergence_type: 'forward_kl': upo's f_divergence is read by its dpo and sigmoid_norm" in e
                   for e in translate(trl, "dpo").errors)
    norm = translate({"loss_type": "sigmoid_norm", "f_divergence_type": "forward_kl"}, "dpo")
    assert not norm.errors and (norm.values["method"], norm.values["f_divergence"]) == ("sigmoid_norm", "forward_kl")


def test_trls_exo_pair_without_its_epsilon_is_refused():
    """TRL reads exo_pair's epsilon from label_smoothing; at its default 0, TRL's loss is log 0 (with weight 0:
    0 * inf, NaN)."""
    for trl in ({"loss_type": "exo_pair"}, {"loss_type": ["sigmoid", "exo_pair"], "loss_weights": [1.0, 0.0]}):
        assert any("label_smoothing 0 (its default) its loss is infinite" in e for e in translate(trl, "dpo").errors)


def test_the_legacy_rpo_alpha_beside_a_loss_type_list_is_refused():
    for trl in ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5], "rpo_alpha": 0.3},
                {"loss_type": ["sigmoid", "bco_pair"], "rpo_alpha": 0.3}):
        assert any("rpo_alpha: earlier TRL versions' RPO weight" in e for e in translate(trl, "dpo").errors)
    assert translate({"rpo_alpha": 0.3}, "dpo").values["rpo_alpha"] == 0.3  # alone: earlier TRL's RPO


def test_trls_simpo_with_its_nll_term_is_cpo_simpo():
    """TRL's cpo_alpha defaults to 1: CPO-SimPO, SimPO plus the chosen NLL: upo's mix of simpo and sft."""
    out = translate({"loss_type": "simpo", "simpo_gamma": 0.8}, "cpo")
    assert not out.errors
    assert (out.values["method"], out.values["loss_mix"], out.values["simpo_gamma"]) == ("mix", {"simpo": 1.0, "sft": 1.0},
                                                                                          0.8)
    assert "cpo_alpha" not in out.values and any("CPO-SimPO" in note for note in out.notes)


def test_lora_takes_peft_defaults_for_the_architecture(tiny_model_dir):
    """TRL leaves lora_target_modules to peft (q_proj, v_proj for Llama); its ModelConfig's
    lora_dropout is 0.05; TRL saves adapters. Without use_peft the lora_* keys are not translated."""
    out = translate({"model_name_or_path": str(tiny_model_dir), "use_peft": True, "lora_r": 8}, "dpo")
    assert {k: out.values[k] for k in ("lora", "lora_r", "lora_dropout", "lora_target_modules", "merge_lora")} == {
        "lora": True, "lora_r": 8, "lora_dropout": 0.05, "lora_target_modules": ["q_proj", "v_proj"],
        "merge_lora": False}
    out = translate({"model_name_or_path": "some/hub-model", "use_peft": True}, "dpo")
    assert any("set lora_target_modules" in error for error in out.errors)
    out = translate({"lora_r": 8}, "dpo")
    assert "lora_r" not in out.values and out.not_translated == ["lora_r (TRL config: use_peft is false)"]


@pytest.mark.parametrize(("trainer", "extra", "method"), [
    ("dpo", {}, "dpo"), ("kto", {}, "kto"), ("cpo", {"loss_type": "simpo", "cpo_alpha": 0.0}, "simpo"),
    ("orpo", {"use_peft": True, "lora_r": 4}, "orpo"),
])
def test_a_translated_trl_config_trains(trainer, extra, method, tiny_model_dir, pairs_file, tmp_path, capsys):
    trl = write(tmp_path, yaml.safe_dump({
        "model_name_or_path": str(tiny_model_dir), "dataset_name": str(pairs_file), "max_steps": 2,
        "per_device_train_batch_size": 2, "learning_rate": 1e-3, "output_dir": str(tmp_path / "run"),
        "max_length": 128, "logging_steps": 1, "report_to": "none", "save_strategy": "no",
        "gradient_checkpointing": False, "push_to_hub": False, **extra}))
    upo_yaml = tmp_path / "upo.yaml"
    assert main(["from-trl", str(trl), "--trainer", trainer, "--output", str(upo_yaml)]) == 0
    assert "train with: upo train --config" in capsys.readouterr().out
    cfg = load_config(str(upo_yaml), {})
    assert (cfg.method, cfg.max_steps, cfg.learning_rate, cfg.eval_fraction) == (method, 2, 1e-3, 0.0)
    assert main(["train", "--config", str(upo_yaml), "--progress", "false"]) == 0
    saved = "adapter_model.safetensors" if cfg.lora else "model.safetensors"  # TRL saves LoRA adapters unmerged
    assert (tmp_path / "run" / "final" / saved).exists()
    assert main(["from-trl", str(trl), "--trainer", trainer, "--output", str(upo_yaml)]) == 2  # no overwrite
    assert "does not overwrite" in capsys.readouterr().err


def test_a_trl_key_in_an_upo_config_names_upos_key(tmp_path, capsys):
    path = write(tmp_path, "per_device_train_batch_size: 4\n", "upo.yaml")
    assert main(["train", "--config", str(path)]) == 2
    assert "it is TRL's name of upo's 'batch_size': `upo from-trl FILE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("trl", "key", "why"),
    [
        ({"learning_rate": "abc"}, "learning_rate", "'learning_rate' must be a number, got 'abc'"),
        ({"per_device_train_batch_size": 8.0}, "per_device_train_batch_size", "must be an integer, got 8.0"),
        ({"num_train_epochs": None}, "num_train_epochs", "None is not a number"),
        ({"max_steps": "abc"}, "max_steps", "'abc' is not a whole number"),
        ({"max_steps": 2.7}, "max_steps", "2.7 is not a whole number"),
        ({"save_steps": None}, "save_steps", "None is not a whole number"),
        ({"loss_type": 3}, "loss_type", "3 is not a name or a list of names"),
        ({"report_to": 3}, "report_to", "3 is not a name or a list of names"),
        ({"lr_scheduler_type": ["linear"]}, "lr_scheduler_type", "upo has linear, cosine"),
        ({"warmup_steps": "0.1"}, "warmup_steps", "a ratio of the total steps"),
        ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1, "abc"]}, "loss_weights", "must be numbers"),
        ({"max_length": None}, "max_length", "upo needs a max_length"),
        ({"model_revision": "v2"}, "model_revision", "upo loads a model's main revision"),
        ({"load_best_model_at_end": True}, "load_best_model_at_end", "the model of the last step"),
    ],
)
def test_a_value_of_the_wrong_type_or_meaning_is_an_error_naming_its_key(trl, key, why):
    """Errors, never tracebacks, and never a config that `upo train` would then refuse."""
    out = translate(trl, "dpo")
    assert any(key in error and why in error for error in out.errors), out.errors


def test_numbers_written_as_yaml_text_are_read_as_numbers():
    """PyYAML reads 5e-7 (no dot) as text; TRL's parser takes it, and so does the translation."""
    out = translate(yaml.safe_load("learning_rate: 5e-7\nwarmup_steps: 1e1\nbeta: 1e-1\n"), "dpo")
    assert not out.errors
    assert (out.values["learning_rate"], out.values["warmup_steps"], out.values["beta"]) == (5e-7, 10, 0.1)


def test_what_trl_reads_differently_is_translated_as_trl_runs_it():
    # TRL 1.16's sigmoid loss does not read label_smoothing: upo's dpo would (conservative DPO)
    out = translate({"label_smoothing": 0.1}, "dpo")
    assert "label_smoothing" not in out.values and any("sigmoid loss does not read it" in n for n in out.notes)
    assert translate({"label_smoothing": 0.1}, "cpo").values["label_smoothing"] == 0.1
    # max_grad_norm <= 0: no clipping; activation_checkpointing takes over gradient_checkpointing
    out = translate({"max_grad_norm": 0, "activation_checkpointing": False}, "dpo")
    assert out.values["max_grad_norm"] is None and out.values["gradient_checkpointing"] is False
    # evaluation every logging_steps when eval_steps is unset
    out = translate({"dataset_name": "d", "eval_strategy": "steps", "logging_steps": 7}, "dpo")
    assert out.values["eval_steps"] == 7
    # a part of an epoch is fine when max_steps decides
    assert translate({"num_train_epochs": 0.5, "max_steps": 10}, "dpo").values["max_steps"] == 10
    # KTOTrainer reads rows in order; ORPO's NLL covers the prompt; norms are not decayed in transformers
    out = translate({}, "kto")
    assert out.values["group_by_length"] is False and any("no shuffling" in n for n in out.notes)
    assert any("over the prompt" in n for n in translate({}, "orpo").notes)
    assert any("exempts biases and norm weights" in n for n in translate({"weight_decay": 0.01}, "dpo").notes)


def test_booleans_written_as_text_are_read_as_trls_parser_reads_them():
    """TRL's parser reads bf16: "false" as False (so TRL trains in fp32); so does the translation."""
    out = translate({"bf16": "false", "fp16": "no", "use_peft": "false", "lora_r": 8, "disable_dropout": "true"}, "dpo")
    assert not out.errors
    assert out.values["precision"] == "fp32" and out.values["lora"] is False and "lora_r" not in out.values
    out = translate({"bf16": "maybe"}, "dpo")
    assert any("bf16: 'maybe' is not true or false" in error for error in out.errors)


@pytest.mark.parametrize(
    ("trainer", "trl", "why"),
    [
        ("orpo", {"loss_type": "sigmoid"}, "loss_type: not a key of TRL 1.16's ORPOTrainer config"),
        ("dpo", {"alpha": 0.5}, "alpha: not a key of TRL 1.16's DPOTrainer config"),
        ("dpo", {"fp16": True, "bf16": True}, "fp16 and bf16 are both true"),
        ("dpo", {"dataset_name": "d", "eval_strategy": "steps", "dataset_test_split": None}, "name the split"),
    ],
)
def test_keys_trl_would_refuse_are_refused(trainer, trl, why):
    assert any(why in error for error in translate(trl, trainer).errors)


def test_null_prompt_limit_and_zero_eval_steps_mean_what_they_mean_in_trl():
    out = translate({"max_prompt_length": None, "max_length": 512}, "dpo")
    assert out.values["max_prompt_length"] == 511  # no prompt limit, as TRL 1.16
    out = translate({"dataset_name": "d", "eval_strategy": "steps", "eval_steps": 0, "logging_steps": 5}, "dpo")
    assert out.values["eval_steps"] == 5


@pytest.mark.parametrize(("name", "trainer"), [("dpo.yaml", "dpo"), ("orpo.yaml", "orpo")])
def test_the_shipped_trl_examples_become_valid_upo_configs(name, trainer, tmp_path, capsys):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "trl" / name
    assert main(["from-trl", str(example), "--trainer", trainer, "--output", str(tmp_path / "upo.yaml")]) == 0
    assert load_config(str(tmp_path / "upo.yaml"), {}).method == trainer


@pytest.mark.parametrize(("name", "trainer"), [("dpo", "dpo"), ("orpo", "orpo"), ("mpo", "dpo")])
def test_the_example_trl_configs_translate(name, trainer):
    from pathlib import Path

    out = translate_file(Path(__file__).resolve().parents[1] / "examples" / "trl" / f"{name}.yaml", trainer)
    assert out.values["method"] == {"dpo": "dpo", "orpo": "orpo", "mpo": "mix"}[name]
    if name == "mpo":
        assert out.values["loss_mix"] == {"dpo": 0.8, "bco_pair": 0.2, "sft": 1.0}
    UPOConfig(**{**out.values, "dataset": "pairs.jsonl"})  # the translation is a valid upo config


def test_what_trl_refuses_or_overflows_is_refused():
    """KTOTrainer's kto loss drawing at random (TRL refuses it); CPO's sigmoid with AlphaPO alpha > 0 (TRL's loss is
    inf on any long response)."""
    assert any("TRL 1.16's KTOTrainer refuses it with the kto loss" in e
               for e in translate({"train_sampling_strategy": "random"}, "kto").errors)
    assert not translate({"loss_type": "apo_zero_unpaired", "train_sampling_strategy": "random"}, "kto").errors
    assert any("alpha: 0.25: CPO's reward is the summed log-prob" in e for e in translate({"alpha": 0.25}, "cpo").errors)


def test_tr_dpo_is_translated():
    out = translate({"sync_ref_model": True, "ref_model_mixup_alpha": 0.9, "ref_model_sync_steps": 64}, "dpo")
    assert not out.errors
    assert {k: out.values[k] for k in ("sync_ref_model", "precompute_ref_logps", "ref_model_mixup_alpha",
                                       "ref_model_sync_steps")} == {"sync_ref_model": True, "precompute_ref_logps": False,
                                                                    "ref_model_mixup_alpha": 0.9, "ref_model_sync_steps": 64}
    UPOConfig(**{**out.values, "dataset": "pairs.jsonl"})
    assert any("sync_ref_model: with use_peft" in e for e in translate(
        {"sync_ref_model": True, "use_peft": True, "lora_target_modules": ["q_proj"]}, "dpo").errors)
    assert any("precompute_ref_log_probs: true with sync_ref_model" in e for e in translate(
        {"sync_ref_model": True, "precompute_ref_log_probs": True}, "dpo").errors)
    assert any(k.startswith("ref_model_sync_steps") for k in translate({"ref_model_sync_steps": 8}, "dpo").not_translated)
