"""No code path unpickles: no pickle/dill/marshal loads, and torch.load only with weights_only=True."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("shared", "producers", "consumers", "mistnet")
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "marshal", "shelve", "joblib"}
FORBIDDEN_CALLS = {"load", "loads", "Unpickler"}


def _sources() -> list[Path]:
    return [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]


class TestNoUnpickling:
    """The project's own code never deserialises with pickle-like modules."""

    def test_sources_found(self) -> None:
        assert len(_sources()) > 20

    def test_no_pickle_family_loads(self) -> None:
        offenders = []
        for path in _sources():
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    if any(m.split(".")[0] in FORBIDDEN_MODULES for m in mods):
                        offenders.append(f"{path}:{node.lineno} imports {mods}")
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in FORBIDDEN_MODULES
                    and node.func.attr in FORBIDDEN_CALLS
                ):
                    offenders.append(f"{path}:{node.lineno} calls {node.func.value.id}.{node.func.attr}")
        assert offenders == []

    def test_torch_load_only_with_weights_only(self) -> None:
        offenders = []
        for path in _sources():
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"
                ):
                    flag = next((k for k in node.keywords if k.arg == "weights_only"), None)
                    if not (flag and isinstance(flag.value, ast.Constant) and flag.value.value is True):
                        offenders.append(f"{path}:{node.lineno}")
        assert offenders == []


def _all_python() -> list[Path]:
    """Every Python file of the project, tests and deploy scripts included (not the virtual env)."""
    skip = {".venv", ".git", "build", "dist", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}
    return [p for p in REPO.rglob("*.py") if not skip.intersection(p.relative_to(REPO).parts)]


def _name(node: ast.expr) -> str:
    """``a.b.c`` of an attribute chain or name, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _offences(node: ast.AST) -> list[str]:
    """What is wrong with one syntax node, if anything."""
    found = []
    if isinstance(node, ast.ImportFrom) and node.module in {"torch", "torch.serialization"}:
        found += ["imports torch's load by name"] if any(a.name == "load" for a in node.names) else []
    if isinstance(node, ast.Import | ast.ImportFrom):
        mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        found += [f"imports {mods}"] if any(m.split(".")[0] in FORBIDDEN_MODULES for m in mods) else []
    if not isinstance(node, ast.Call):
        return found
    called = _name(node.func)
    keywords = {k.arg: k.value for k in node.keywords}
    allow = keywords.get("allow_pickle")
    if called.endswith("load") and isinstance(allow, ast.Constant) and allow.value is True:
        found.append(f"{called}(allow_pickle=True)")
    if called.endswith(("read_pickle", "torch.jit.load", "serialization.load")):
        found.append(f"calls {called}")
    first = node.args[0] if node.args else None
    if called in {"__import__", "importlib.import_module"} and isinstance(first, ast.Constant):
        found += [f"imports {first.value} dynamically"] if str(first.value).split(".")[0] in FORBIDDEN_MODULES else []
    flag = keywords.get("weights_only")
    if called == "torch.load" and not (isinstance(flag, ast.Constant) and flag.value is True):
        found.append("torch.load without weights_only=True")
    return found


class TestNoUnpicklingAnywhere:
    """Nor do the tests and scripts, and no indirect door is open: aliases, numpy/pandas pickles, dynamic imports."""

    def test_indirect_doors(self) -> None:
        offenders = [
            f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)} {offence}"
            for path in _all_python()
            if path != Path(__file__).resolve()
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
            for offence in _offences(node)
        ]
        assert offenders == []

    def test_the_scan_sees_each_door(self) -> None:
        doors = [
            "import pickle",
            "from torch import load",
            "np.load(f, allow_pickle=True)",
            "pd.read_pickle(f)",
            "__import__('marshal')",
            "torch.load(f)",
            "torch.load(f, weights_only=False)",
        ]
        assert [door for door in doors if not _call_offences(door)] == []


def _call_offences(source: str) -> list[str]:
    return [o for node in ast.walk(ast.parse(source)) for o in _offences(node)]
