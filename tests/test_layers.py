"""The structure's rules (``../shared/DESIGN.md``), checked on the code itself.

- The layers: cli -> shells -> runtime -> engines -> core, and the product never imports the
  training code (``lint-imports``, contracts in ``pyproject.toml``; every import counts, also
  those inside functions).
- No import cycle between modules (every import counts, type-checking ones too).
- No module reaches into another's ``_private`` names.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "streamer"

# ``x._name`` where x is not self/cls and the name is not another module's: the standard
# library's documented os._exit (a Ray worker ends at once), and a class copying its own kind.
ALLOWED_PRIVATE = {("streamer/batch_ray.py", "os._exit"), ("streamer/serve/cluster/asgi.py", "other._state")}


def lint_imports() -> str:
    exe = Path(sys.executable).with_name("lint-imports")
    return str(exe) if exe.exists() else shutil.which("lint-imports")


def test_the_layer_contracts_hold():
    exe = lint_imports()
    assert exe, "import-linter is part of the test extra: pip install -e '.[test]'"
    run = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "2 kept, 0 broken" in run.stdout


def module_cycles() -> list[list[str]]:
    import grimp

    g = grimp.build_graph("streamer")
    edges = {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}
    index, low, stack, on, out = {}, {}, [], set(), []

    def strong(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycle_between_modules():
    assert module_cycles() == []


def private_reaches() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("streamer"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{rel}:{node.lineno} imports {node.module}.{alias.name}")
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                what = f"{ast.unparse(node.value)}.{node.attr}"
                if (rel, what) not in ALLOWED_PRIVATE:
                    found.append(f"{rel}:{node.lineno} reads {what}")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr", "hasattr")
                  and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
                  and node.args[1].value.startswith("_") and not node.args[1].value.startswith("__")):
                found.append(f"{rel}:{node.lineno} {node.func.id}(..., {node.args[1].value!r})")
    return found


def test_no_module_reaches_into_another_modules_private_names():
    assert private_reaches() == []


@pytest.mark.parametrize("code, expected", [
    ("from streamer.x import _hidden\n", "imports streamer.x._hidden"),
    ("q.lane._count\n", "reads q.lane._count"),
    ("getattr(q, '_count', {})\n", "getattr(..., '_count')"),
])
def test_the_private_name_check_finds_what_it_looks_for(tmp_path, monkeypatch, code, expected):
    pkg = tmp_path / "streamer"
    pkg.mkdir()
    (pkg / "m.py").write_text(code + "self._fine\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = private_reaches()
    assert len(found) == 1 and expected in found[0]


# The core, the engines, the runtime and the dashboard ask for what they need through declared
# types and protocols: an object's optional capability is never probed with
# ``getattr(obj, "name", default)``. (A dataclass validating its own fields reads
# ``getattr(self, key)``, a name it holds; that is not a probe.)
DECLARED = ("core", "asr", "audio", "text", "runtime", "ui", "live")


def capability_probes(root: Path | None = None) -> list[str]:
    root = root or PACKAGE
    found = []
    for sub in DECLARED:
        for path in sorted((root / sub).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                        and len(node.args) == 3 and isinstance(node.args[1], ast.Constant)
                        and not (isinstance(node.args[0], ast.Name) and node.args[0].id in ("self", "exc"))):
                    found.append(f"{path.relative_to(root)}:{node.lineno} getattr(..., {node.args[1].value!r}, ...)")
    return found


def test_capabilities_are_declared_not_probed():
    assert capability_probes() == []


def test_the_probe_check_finds_a_probe(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "m.py").write_text("getattr(model, 'digest', None)\ngetattr(self, 'x', 1)\n")
    for sub in DECLARED[1:]:
        (tmp_path / sub).mkdir()
    assert capability_probes(tmp_path) == ["core/m.py:1 getattr(..., 'digest', ...)"]
