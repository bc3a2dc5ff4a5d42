"""upo: Unified Preference Optimization (arXiv 2405.17956) for Hugging Face causal LMs."""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes (QLoRA's 4-bit layers; imported by peft wherever it is installed) warns at import, on
# CPUs with AVX-512 bf16, that it cannot load the optional `kernels` package for its CPU inference
# kernel: a kernel upo turns off (upo.modeling.keep_4bit_layout), so the warning is noise on every command.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
