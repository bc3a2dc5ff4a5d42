"""The README's config reference is generated from UPOConfig and must not drift from it."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_config_reference_is_current():
    sys.path.insert(0, str(ROOT / "scripts"))
    from config_reference import reference

    assert reference() in (ROOT / "README.md").read_text(), "regenerate: python scripts/config_reference.py"


def test_every_config_key_has_help_text():
    from upo.config import FIELDS, UPOConfig, field_comments

    assert set(field_comments(UPOConfig)) == set(FIELDS)
