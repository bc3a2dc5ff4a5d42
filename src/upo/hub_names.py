"""Telling a local path from a Hugging Face Hub name, so that a mistyped path is reported as missing
instead of being sent to the Hub (unreachable offline, and a confusing error when reachable)."""

from __future__ import annotations


def looks_local(name: str) -> bool:
    """Whether a model or dataset name is a local path rather than a Hub name: Hub names are "name"
    or "owner/name" (dots allowed, e.g. Qwen/Qwen2.5-0.5B); these start with ".", "/" or "~", or have
    more than one "/"."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1
