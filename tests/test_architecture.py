"""The package's rooms stand apart: run time never loads training code, and no two rooms import
each other (DESIGN.md §Architecture)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ase_adapt

PACKAGE = Path(ase_adapt.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ase_adapt module ``path`` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        out.update(t for t in targets if t.startswith("ase_adapt"))
    return out


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_import_circle_between_rooms():
    """Rooms are ase_adapt's top-level modules and subpackages; lazy imports count too."""
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        src = _room(_module_name(path))
        for target in _imports(path):
            while target not in modules and "." in target:  # `from x import name`: name is no module
                target = target.rsplit(".", 1)[0]
            dst = _room(target)
            if dst != src and dst != "ase_adapt":
                edges.setdefault(src, set()).add(dst)

    def reaches(a: str, b: str, seen: set[str]) -> bool:
        for n in edges.get(a, ()):
            if n == b or (n not in seen and (seen.add(n) or reaches(n, b, seen))):
                return True
        return False

    circles = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if reaches(b, a, set())})
    assert not circles, f"import circles between rooms: {circles}"


def test_run_time_loads_nothing_from_train():
    """Importing the package and running an AdaptiveCalculator with TTT never imports ase_adapt.train."""
    code = """
import sys
from ase.build import molecule
import ase_adapt
from ase_adapt import AdaptiveCalculator
from ase_adapt.testing import toy_prior
from ase_adapt.adapt.ttt import TTTSettings
model = ase_adapt.build_model(elements=["H", "C", "O"], channels=8, num_layers=2, l_max=1)
calc = AdaptiveCalculator(model, toy_prior(), prior_head="prior", detectors=False, adapt_when="always",
                          ttt=TTTSettings(max_steps=3, md_steps=0, guard=None))
atoms = molecule("CH3CH2OH")
atoms.calc = calc
atoms.get_forces()
assert calc.ttt_result is not None and calc.ttt_result.steps > 0
print(sorted(m for m in sys.modules if m.startswith("ase_adapt.train")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_rooms_stay_small():
    """No file in ase_adapt/ over 400 lines and no function over 80: one job per owner."""
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 400:
            too_long.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: "
                                f"{node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long


def test_adaptive_calculator_predicts_through_the_plain_path():
    """AdaptiveCalculator has no calculate() of its own: adaptation enters through graph_cutoff."""
    from ase_adapt import AdaptiveCalculator, MLFFCalculator

    assert AdaptiveCalculator.calculate is MLFFCalculator.calculate
    assert AdaptiveCalculator.graph_cutoff is not MLFFCalculator.graph_cutoff
