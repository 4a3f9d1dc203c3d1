"""Inference must not need the trainers: the rules of the import graph.

1. keyvid/models, keyvid/diffusion, keyvid/data, keyvid/eval, keyvid/pipeline and keyvid/localize.py,
   and every keyvid module they import (at any depth, inside functions too), import neither
   keyvid.training nor accelerate nor deepspeed. (transformers may import accelerate itself when it is
   installed; that is the library's business, so rule 1 reads our own import statements.)
2. No keyvid module imports launch/ or data_prep/.
3. Importing the pipeline and the localizer loads no keyvid.training module.
"""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INFERENCE = ["keyvid/models", "keyvid/diffusion", "keyvid/data", "keyvid/eval", "keyvid/pipeline", "keyvid/localize.py"]
TRAINING_ONLY = ("keyvid.training", "accelerate", "deepspeed")


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # "from keyvid.models import io"
    return names


def _files() -> dict[str, Path]:
    return {_module_name(p): p for p in (REPO / "keyvid").rglob("*.py")}


def _closure(roots: list[str], files: dict[str, Path]) -> dict[str, set[str]]:
    """keyvid module -> its imports, for the roots and every keyvid module reachable from them."""
    seen, todo = {}, list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in files:
            continue
        seen[name] = _imports(files[name])
        todo.extend(m for m in seen[name] if m in files)
    return seen


def _matches(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_inference_code_imports_no_training_code():
    files = _files()
    roots = [m for m, p in files.items() if any(p.is_relative_to(REPO / r) for r in INFERENCE)]
    assert "keyvid.pipeline" in roots and "keyvid.models.unet" in roots
    graph = _closure(roots, files)
    bad = {m: sorted(i for i in imps if _matches(i, TRAINING_ONLY)) for m, imps in graph.items()}
    assert not {m: v for m, v in bad.items() if v}


def test_the_package_imports_no_entry_scripts_or_data_prep():
    bad = {m: sorted(i for i in _imports(p) if _matches(i, ("launch", "data_prep"))) for m, p in _files().items()}
    assert not {m: v for m, v in bad.items() if v}


def test_the_rules_catch_a_violation(tmp_path):
    bad = tmp_path / "mod.py"
    bad.write_text("def f():\n    from keyvid.training.export import export_model\n")
    assert any(_matches(i, TRAINING_ONLY) for i in _imports(bad))


def test_loading_the_pipeline_loads_no_trainer_module():
    code = ("import sys, keyvid.pipeline, keyvid.localize; "
            "print([m for m in sys.modules if m.startswith(('keyvid.training', 'launch', 'data_prep'))])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
