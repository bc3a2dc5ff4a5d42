"""Safe loading: nothing upo reads can run code it carries.

- model weights are written as safetensors; transformers reads any .bin with weights_only=True,
  and no call here turns that (or trust_remote_code) the other way;
- torch.load only with weights_only=True; no pickle / marshal / dill anywhere except the toxicity
  tokenizer's restricted unpickler (tests/test_scorers.py::test_restricted_unpickler_refuses_other_globals
  shows it refuses other globals); YAML only through safe_load;
- user code (a `package.module:function` reward) is imported in one place, rewards/resolve.py,
  and only for the names a config gives;
- a checkpoint whose pickled optimizer state was replaced by a malicious pickle is refused on resume.

The source audit parses the code (ast), so a call split over lines or aliased through `from x import y`
is still seen; `find_violations` is tested on bad snippets so that the audit itself can fail.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from helpers import run_config

from upo.checkpoint import latest_checkpoint
from upo.trainer import train

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("src", "benchmarks", "scripts")
RESTRICTED_UNPICKLER = "src/upo/rewards/toxicity.py"  # the one module that may use pickle
USER_CODE_IMPORTER = "src/upo/rewards/resolve.py"  # the one module that imports modules by name

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str:
    """'torch.load' for torch.load(...), following `import x as y` and `from x import y`."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value, aliases)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expression>"
    return None


def find_violations(source: str, path: str) -> list[str]:
    """Unsafe loading in one file's source, as 'path:line: what' strings."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    # classes of this file that subclass yaml.SafeLoader: yaml.load(..., Loader=<one of them>) is safe_load's
    safe_loaders = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                    and any(_dotted(b, aliases) == "yaml.SafeLoader" for b in node.bases)}
    for node in ast.walk(tree):
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.split(".")[0] in UNSAFE_MODULES and path != RESTRICTED_UNPICKLER:
                    problems.append(f"{where}: imports {name}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if name == "torch.load" and _keyword(node, "weights_only") is not True:
            problems.append(f"{where}: torch.load without weights_only=True")
        loader = next((kw.value for kw in node.keywords if kw.arg == "Loader"), None)
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all") and not (
                name == "yaml.load" and isinstance(loader, ast.Name) and loader.id in safe_loaders):
            problems.append(f"{where}: {name} (use yaml.safe_load)")
        if name.split(".")[-1] in ("load", "loads") and name.rsplit(".", 1)[0] in ("numpy", "np"):
            if _keyword(node, "allow_pickle") not in (None, False):
                problems.append(f"{where}: {name} with allow_pickle")
        if name.endswith(("from_pretrained", "load_dataset", "pipeline")):
            if _keyword(node, "trust_remote_code") not in (None, False):
                problems.append(f"{where}: {name} with trust_remote_code")
            if _keyword(node, "weights_only") not in (None, True):
                problems.append(f"{where}: {name} with weights_only=False")
            if _keyword(node, "use_safetensors") is False:
                problems.append(f"{where}: {name} with use_safetensors=False")
        if name.endswith("save_pretrained") and _keyword(node, "safe_serialization") is False:
            problems.append(f"{where}: {name} with safe_serialization=False")
        if name in ("eval", "exec", "__import__", "importlib.import_module") and path != USER_CODE_IMPORTER:
            problems.append(f"{where}: {name}() runs code chosen at run time")
    return sorted(problems, key=lambda v: int(v[len(path) + 1 :].split(":", 1)[0]))


def _python_files() -> list[Path]:
    return sorted(p for top in SCANNED for p in (ROOT / top).rglob("*.py") if ".venv" not in p.parts)


def test_the_audit_catches_unsafe_snippets():
    bad = """
import pickle
import torch
import yaml as y
from numpy import load as npload
from transformers import AutoModel
from importlib import import_module

state = torch.load(
    "x.pt",
    map_location="cpu",
)
torch.load("y.pt", weights_only=False)
torch.load("z.pt", weights_only=True)  # fine
y.load(open("c.yaml"))
y.safe_load(open("c.yaml"))  # fine
class Strict(y.SafeLoader): pass
y.load(text, Loader=Strict)  # fine: a SafeLoader
y.load(text, Loader=y.Loader)
npload("a.npy", allow_pickle=True)
AutoModel.from_pretrained("m", trust_remote_code=True)
AutoModel.from_pretrained("m")  # fine
model.save_pretrained("out", safe_serialization=False)
import_module(name)
model.eval()  # fine: a method, not the builtin
"""
    found = find_violations(bad, "src/upo/example.py")
    assert [f.split(": ", 1)[1] for f in found] == [
        "imports pickle",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
        "yaml.load (use yaml.safe_load)",
        "yaml.load (use yaml.safe_load)",
        "numpy.load with allow_pickle",
        "transformers.AutoModel.from_pretrained with trust_remote_code",
        "model.save_pretrained with safe_serialization=False",
        "importlib.import_module() runs code chosen at run time",
    ]
    assert [f.split(":")[1] for f in found] == ["2", "9", "13", "15", "19", "20", "21", "23", "24"]
    # the restricted unpickler's module may import pickle; the resolver may import modules by name
    assert find_violations("import pickle\n", RESTRICTED_UNPICKLER) == []
    assert find_violations("import importlib\nimportlib.import_module(n)\n", USER_CODE_IMPORTER) == []


def test_the_source_tree_loads_nothing_unsafely():
    files = _python_files()
    assert any(str(p).endswith("src/upo/trainer.py") for p in files) and len(files) > 20
    problems = [v for p in files for v in find_violations(p.read_text(), str(p.relative_to(ROOT)))]
    assert problems == []


def test_the_restricted_unpickler_is_the_only_pickle_user():
    """The allowed module really uses pickle (else the exemption is stale and should go)."""
    source = (ROOT / RESTRICTED_UNPICKLER).read_text()
    assert "class RestrictedTokenizerUnpickler(pickle.Unpickler)" in source and "def find_class" in source


def test_resume_refuses_a_checkpoint_with_a_malicious_pickle(tiny_model_dir, pairs_file, tmp_path):
    """Accelerate's optimizer/scheduler/RNG states are torch pickles; they are read with
    weights_only=True, so a swapped-in pickle that would run code is refused instead."""
    cfg = run_config(tiny_model_dir, pairs_file, tmp_path, method="dpo", max_steps=1, save_steps=1, eval_fraction=0.0)
    train(cfg)
    checkpoint = latest_checkpoint(cfg.output_dir)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    pickled = sorted(p.name for p in checkpoint.iterdir() if p.suffix in (".bin", ".pkl"))
    assert "optimizer.bin" in pickled, pickled
    assert not any(p.suffix == ".bin" and p.name.startswith("model") for p in checkpoint.iterdir())  # safetensors
    torch.save({"state": Payload()}, checkpoint / "optimizer.bin")
    # A swapped file of another size is already refused as broken (test_resume_checks); an attacker
    # who also edits the listed size meets weights_only.
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    state["files"]["optimizer.bin"] = (checkpoint / "optimizer.bin").stat().st_size
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    cfg.resume, cfg.max_steps = True, 2
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        train(cfg)
    assert not marker.exists()
