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
