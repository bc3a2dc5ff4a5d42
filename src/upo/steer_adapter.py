"""Steered UPO by adapter (`steer_by: adapter`): aux_coef moves the weights between two LoRA adapters.

The policy is the base model with two LoRA adapters, `default` and `steer`, mixed by
w = aux_coef / max(steer_aux_coefs) (`adapter_weight`): `default` at scale 1 - w and `steer` at w on
every LoRA layer, so W(aux_coef) = W0 + (1 - w) dW_default + w dW_steer. At aux_coef 0 the policy is
the base with `default` alone, at the largest value with `steer` alone, and in between their linear
mix: the parameter-space conditioning of Conditional Language Policy (Wang et al. 2024; Panacea,
Zhong et al. 2024, in spirit). upo's first steered runs, told their condition by a control token
(`steer_by: token`, `upo.data.steering`), held their conditions 40-50x closer together than the
grid's models trained at those values (README, Steered UPO). A first version of this one kept
`default` whole and scaled `steer` alone: `default` then took every step's auxiliary gradient, and
all its conditions sat near the grid's aux_coef 3 model (README).

A scale holds for a whole forward pass, so one forward pass runs one condition: each optimizer step
trains one condition, drawn by `step_condition` (every block of K steps a seeded permutation of the K
values: each value trains 1/K of the steps, or with `steer_aux_weights` w its share w / sum(w); a
resumed run gives every step the value it had),
and each example of that step gets the step's aux_coef in UPO's loss. The reference (the adapters
disabled), and so the reference log-probs, do not depend on it.

final/ holds the base with `default` merged (the aux_coef 0 policy: a plain save_pretrained model)
and `steer_adapter/`, a peft LoRA adapter of twice the rank holding dW_steer - dW_default (`steer`'s
and `default`'s factors side by side): at scale w on top of final/ it gives exactly W(aux_coef).
`load_steered` makes the policy of one trained aux_coef that way; a transformers and peft user does
the same (README).
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import numpy as np
import torch

from upo.config_values import ConfigError
from upo.data.steering import SteeringError, listed, read_steering, steering_record

STEER_ADAPTER = "steer"  # the peft adapter name of the steering direction
ADAPTER_FOLDER = "steer_adapter"  # in final/: that adapter, on top of final/'s own weights


def adapter_weight(aux_coef: float, aux_coefs: list[float]) -> float:
    """w at `aux_coef`: aux_coef / max(aux_coefs), so 0 -> 0 (`default` alone) and the largest
    trained value -> 1 (`steer` alone)."""
    return float(aux_coef) / max(aux_coefs)


def step_condition(step: int, weights: list[int], seed: int) -> int:
    """Which of the K conditions optimizer step `step` (0-based) trains: within each block of
    sum(weights) steps a seeded permutation in which condition i comes weights[i] times, so every block
    trains each condition that often (all weights 1: each once every K steps)."""
    total = sum(weights)
    block, position = divmod(step, total)
    order = np.repeat(np.arange(len(weights)), weights)  # [total]: condition i weights[i] times
    return int(order[np.random.default_rng([seed, 0x57EE, block]).permutation(total)[position]])


def add_steer_adapter(lm) -> None:
    """Give a peft LoRA model (`upo.modeling.add_lora`) the steering adapter, a copy of its `default`
    adapter's config (lora_B starts at 0: no effect until trained), and make both active and trained."""
    lm.add_adapter(STEER_ADAPTER, deepcopy(lm.peft_config["default"]))
    lm.base_model.set_adapter(["default", STEER_ADAPTER])
    adapter_states(lm)  # what the end of training saves: a LoRA setting it cannot save fails now, not then


def adapter_states(lm) -> tuple[dict, dict]:
    """The `steer` and `default` adapters' weights of `lm`, as `split_steer_adapter` combines them; a
    ConfigError when they are not two plain LoRA adapters of the same linear modules (its sum of
    factors is a LoRA adapter only then): rslora, LoRA on embeddings, or other trained weights."""
    from peft.utils import get_peft_model_state_dict

    steer = get_peft_model_state_dict(lm, adapter_name=STEER_ADAPTER, save_embedding_layers=False)
    default = get_peft_model_state_dict(lm, adapter_name="default", save_embedding_layers=False)
    other = sorted({k.split(".")[-2] for k in steer if ".lora_A." not in k and ".lora_B." not in k})
    if steer.keys() != default.keys() or lm.peft_config[STEER_ADAPTER].use_rslora or other:
        raise ConfigError(
            "steer_by: adapter combines two plain LoRA adapters of the same linear layers, and this one "
            + (f"also trains {', '.join(other)} (lora_target_modules naming an embedding, or new tokens' rows): "
               "name linear layers only, or all-linear" if other else "does not (rslora?)"))
    return steer, default


def set_adapter_weight(lm, weight: float) -> None:
    """Mix the two adapters of every LoRA layer of `lm` at w = `weight`: `default` at scale 1 - w,
    `steer` at w (each times lora_alpha / r). On a model holding `steer_adapter/` alone (`load_steered`),
    that adapter at w."""
    from peft.tuners.lora import LoraLayer

    for module in lm.modules():
        if isinstance(module, LoraLayer):
            module.set_scale("default", 1.0 - weight)  # a no-op where there is no such adapter
            module.set_scale(STEER_ADAPTER, weight)


class AdapterSteering:
    """The training loop's side of it: `apply` sets the scale of a batch's condition on the model
    and gives every sequence of the batch that aux_coef (`StepInputs.aux_coef`)."""

    def __init__(self, lm, aux_coefs: list[float], seed: int, weights: list[int] | None = None):
        self.lm, self.aux_coefs, self.seed = lm, list(aux_coefs), seed
        self.weights = list(weights) if weights is not None else [1] * len(self.aux_coefs)

    def aux_coef(self, step: int) -> float:
        return self.aux_coefs[step_condition(step, self.weights, self.seed)]

    def apply(self, batch: dict, step: int) -> dict:
        """`batch` of optimizer step `step` (or held-out batch `step`), conditioned: the model's scale
        set, and batch["aux_coef"] [N] (one per sequence, as `desirable`)."""
        aux_coef = self.aux_coef(step)
        set_adapter_weight(self.lm, adapter_weight(aux_coef, self.aux_coefs))
        return {**batch, "aux_coef": torch.full(batch["desirable"].shape, aux_coef, dtype=torch.float32,
                                                device=batch["desirable"].device)}

    def batches(self, loader):
        """The held-out loader's batches, the k-th under condition `aux_coef(k)`."""
        for k, batch in enumerate(loader):
            yield self.apply(batch, k)


def split_steer_adapter(lm, folder: Path):
    """Save into `folder`, as a peft LoRA adapter folder, dW_steer - dW_default of `lm` (a peft model
    with both adapters): rank 2r, A = [A_steer; A_default], B = [B_steer, -B_default], lora_alpha
    doubled so that its scale (lora_alpha / r) is theirs. Then remove `steer` from `lm` and return it
    with `default` alone active at scale 1 (ready to merge: the aux_coef 0 policy)."""
    from safetensors.torch import save_file

    steer, default = adapter_states(lm)
    config = deepcopy(lm.peft_config[STEER_ADAPTER])
    combined = {k: torch.cat([steer[k], default[k]], dim=0) if ".lora_A." in k else torch.cat([steer[k], -default[k]], dim=1)
                for k in steer}
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in combined.items()}, str(folder / "adapter_model.safetensors"))
    config.r, config.lora_alpha = 2 * config.r, 2 * config.lora_alpha
    config.base_model_name_or_path = ".."  # final/ itself, which holds `default` merged
    config.save_pretrained(str(folder))
    lm.base_model.set_adapter("default")
    lm.delete_adapter(STEER_ADAPTER)
    set_adapter_weight(lm, 0.0)  # `default` at scale 1
    return lm


def is_adapter_steered(folder: str | Path) -> bool:
    """Whether a model folder was steered by adapter (its steering.json says so)."""
    return steering_record(folder).get("steer_by") == "adapter"


def load_steered(model, folder: str | Path, aux_coef: float | None):
    """The policy of `folder` (steered by adapter; `model` loaded from it) at `aux_coef`: its
    `steer_adapter/` at scale `adapter_weight`, merged into the weights. A SteeringError, listing the trained values,
    for a value it was not trained on or for none."""
    from peft import PeftModel

    trained = read_steering(folder)
    if aux_coef is None:
        raise SteeringError(f"this model was trained steered: choose its auxiliary strength with aux_coef "
                            f"(--aux_coef), one of {listed(trained)}")
    value = float(f"{aux_coef:g}")
    if value not in trained:
        raise SteeringError(f"aux_coef {aux_coef:g} is not one this model was trained on; trained values: "
                            f"{listed(trained)}")
    model = PeftModel.from_pretrained(model, str(Path(folder) / ADAPTER_FOLDER), adapter_name=STEER_ADAPTER)
    set_adapter_weight(model, adapter_weight(value, trained))
    return model.merge_and_unload()
