"""The keys of TRL 1.16's trainer configs (DPOConfig, KTOConfig, CPOConfig, ORPOConfig, with
transformers' TrainingArguments, and the CLI's ModelConfig and ScriptArguments) as `upo from-trl`
(`upo.trl_config`) reads them: which trainer class each --trainer names, TRL's defaults that change
the updates, the keys with an upo equivalent, TRL's boolean keys and the keys that change nothing,
and how TRL's parser reads a number (`as_number`)."""

import math

TRAINERS = {"dpo": "DPOTrainer", "kto": "KTOTrainer", "cpo": "CPOTrainer", "orpo": "ORPOTrainer"}

# TRL 1.16's defaults that differ from upo's and change the updates (the same for the four trainers,
# except the loss keys below): written out when the file leaves them unset.
TRL_DEFAULTS = {"learning_rate": 1e-6, "lr_scheduler_type": "linear", "num_train_epochs": 3.0,
                "per_device_train_batch_size": 8, "max_length": 1024, "gradient_checkpointing": True,
                "logging_steps": 10, "eval_strategy": "no", "save_strategy": "steps", "save_steps": 500}
LORA_DEFAULTS = {"lora_dropout": 0.05}  # ModelConfig's, where upo's (0.0) differs; with use_peft only

# TRL key -> upo key: the same meaning and units.
RENAMED = {
    "model_name_or_path": "model", "attn_implementation": "attn_implementation", "output_dir": "output_dir",
    "dataset_name": "dataset", "dataset_train_split": "dataset_split",
    "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "gradient_accumulation_steps",
    "learning_rate": "learning_rate", "weight_decay": "weight_decay", "seed": "seed",
    "max_prompt_length": "max_prompt_length", "gradient_checkpointing": "gradient_checkpointing",
    "padding_free": "padding_free", "precompute_ref_log_probs": "precompute_ref_logps",
    "logging_steps": "logging_steps", "save_total_limit": "save_total_limit", "beta": "beta",
    "label_smoothing": "label_smoothing", "desirable_weight": "desirable_weight",
    "undesirable_weight": "undesirable_weight", "rpo_alpha": "rpo_alpha", "cpo_alpha": "cpo_alpha",
    "simpo_gamma": "simpo_gamma", "use_peft": "lora", "lora_r": "lora_r", "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout", "lora_target_modules": "lora_target_modules", "use_dora": "use_dora",
    "use_rslora": "use_rslora", "lora_modules_to_save": "lora_modules_to_save",
    "ld_alpha": "ld_alpha", "use_weighting": "wpo_weighting",  # LD-DPO, WPO (upo.pair_weighting)
}

# TRL's boolean keys: TRL's parser reads "false" (a YAML string) as False, and so does the translation.
BOOLEANS = frozenset({
    "bf16", "fp16", "use_peft", "gradient_checkpointing", "activation_checkpointing", "padding_free",
    "precompute_ref_log_probs", "disable_dropout", "use_weighting", "sync_ref_model", "load_in_4bit", "load_in_8bit",
    "use_dora", "use_rslora", "trust_remote_code", "dataset_streaming", "streaming", "auto_find_batch_size",
    "full_determinism", "enable_jit_checkpoint", "dataloader_drop_last", "load_best_model_at_end", "push_to_hub",
})

# Keys that change nothing about the updates in upo: logging and Hub logistics, evaluation batch
# sizes, data-loading workers, kernels and compilers (upo picks its own), TRL's own switches for what
# upo always does (padding to the batch, its chat-template handling). Listed as not translated.
NO_EFFECT = frozenset({
    "logging_dir", "logging_first_step", "logging_strategy", "logging_nan_inf_filter", "log_level",
    "log_level_replica", "log_on_each_node", "disable_tqdm", "run_name", "project", "trackio_space_id",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push",
    "hub_revision", "per_device_eval_batch_size", "eval_accumulation_steps",
    "eval_on_start", "prediction_loss_only", "bf16_full_eval", "fp16_full_eval", "tf32", "torch_compile",
    "torch_compile_backend", "torch_compile_mode", "use_liger_kernel", "dataloader_num_workers",
    "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor", "dataset_num_proc",
    "remove_unused_columns", "overwrite_output_dir", "do_train", "do_eval", "do_predict", "save_only_model",
    "save_safetensors", "metric_for_best_model", "greater_is_better",
    "ddp_find_unused_parameters", "ddp_timeout", "ddp_backend", "ddp_bucket_cap_mb", "generate_during_eval",
    "precompute_ref_batch_size", "use_logits_to_keep", "include_num_input_tokens_seen",
    "average_tokens_across_devices", "torch_empty_cache_steps", "lora_task_type", "pad_token", "padding_value",
    "label_pad_token_id", "dataset_text_field", "skip_memory_metrics", "ignore_bias_buffers",
    "activation_offloading", "save_on_each_node", "pad_to_multiple_of", "use_cache", "use_cpu", "local_rank",
    "debug", "batch_eval_metrics", "eval_delay", "eval_do_concat_batches", "eval_use_gather_object",
    "include_for_metrics", "label_names", "length_column_name", "liger_kernel_config", "trackio_bucket_id",
    "trackio_static_space_id", "dataloader_multiprocessing_context", "ddp_broadcast_buffers", "ddp_static_graph",
    "restore_callback_states_from_checkpoint", "ignore_data_skip", "accelerator_config", "dataloader_in_order",
    "env",  # TrlParser: environment variables for the run
    # read only with a setting refused elsewhere (a loss_type, sync_ref_model, eval_strategy)
    "discopop_tau",
})


def as_number(value, kind: type = float) -> int | float | None:
    """A YAML number or its text (PyYAML reads 5e-7 as text; TRL's parser takes it) as `kind`; None
    if it is not a finite number, or not a whole one where `kind` is int."""
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or (kind is int and number != int(number)):
        return None
    return int(number) if kind is int else number
