"""Print the README's config reference table from UPOConfig (keys, defaults, field comments).

    python scripts/config_reference.py > /tmp/ref.md
tests/test_readme.py checks that the README holds exactly this text.
"""

import dataclasses
import inspect
import re

from upo.cli import _field_comments
from upo.config import FIELDS, UPOConfig


def reference() -> str:
    comments = _field_comments()
    out = ["### Config reference", "", "Every key, its default and meaning (the same text is in `upo train --help`)."]
    for line in inspect.getsource(UPOConfig).splitlines():
        section = re.match(r"\s+# ---- (\w[\w ,]*?) -+", line)
        if section:
            out += ["", f"**{section.group(1)}**", "", "| key | default | meaning |", "| --- | --- | --- |"]
            continue
        match = re.match(r"\s+(\w+): [^=]+=", line)
        if match and match.group(1) in FIELDS:
            f = FIELDS[match.group(1)]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append(f"| `{f.name}` | `{default!r}` | {comments.get(f.name, '')} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(reference())
