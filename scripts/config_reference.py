"""The README's config reference table from UPOConfig (keys, defaults, field comments).

    python scripts/config_reference.py           # rewrite the section in README.md
    python scripts/config_reference.py --print   # print it
tests/test_readme.py checks that the README holds exactly this text.
"""

import dataclasses
import inspect
import re
import sys
from pathlib import Path

from upo.config import FIELDS, UPOConfig, field_comments
from upo.domains import field_domains


def reference() -> str:
    comments = field_comments(UPOConfig)
    domains = field_domains(UPOConfig)
    out = ["### Config reference", "", "Every key, its default, the values it may take (numbers outside the range, NaN and",
           "infinity are refused) and its meaning (the same text is in `upo train --help`)."]
    for line in inspect.getsource(UPOConfig).splitlines():
        section = re.match(r"\s+# ---- (\w[\w ,]*?) -+", line)
        if section:
            out += ["", f"**{section.group(1)}**", "", "| key | default | range | meaning |", "| --- | --- | --- | --- |"]
            continue
        match = re.match(r"\s+(\w+): [^=]+=", line)
        if match and match.group(1) in FIELDS:
            f = FIELDS[match.group(1)]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            domain = domains.get(f.name, "")  # None: a number without bounds, only finite
            meaning = comments.get(f.name, "").replace("|", "\\|")  # a bare | would end the table's cell
            out.append(f"| `{f.name}` | `{default!r}` | {'finite' if domain is None else domain} | {meaning} |")
    return "\n".join(out)


README = Path(__file__).resolve().parents[1] / "README.md"


def write_readme(readme: Path = README) -> None:
    """Replace README's "### Config reference" section (up to the next "## " heading) in place."""
    text = readme.read_text()
    start = text.index("### Config reference")
    end = text.index("\n## ", start)
    readme.write_text(text[:start] + reference() + "\n" + text[end:])


if __name__ == "__main__":
    if "--print" in sys.argv:
        print(reference())
    else:
        write_readme()
