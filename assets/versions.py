"""Code versions: a hash of the source of the ops an asset calls and of every project module they import."""
from __future__ import annotations

import ast
import hashlib
import sys
from pathlib import Path

from assets.resources import PROJECT_ROOT

PROJECT_PACKAGES = ("ops", "storage")  # the computation and the writes; assets/ are thin wiring


def _module_file(module: str) -> Path | None:
    """The source file of a project module, found by its name alone: nothing is imported (importing would pull
    torch into every step that only needs a code version)."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = PROJECT_ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _source(module: str) -> str:
    path = _module_file(module)
    if path is None and getattr(sys.modules.get(module), "__file__", None):  # e.g. a tokenizer defined elsewhere
        path = Path(sys.modules[module].__file__)  # type: ignore[arg-type]  # __file__ checked just above
    if path is None:
        raise ModuleNotFoundError(f"no Python source for module {module!r}")
    return path.read_text(encoding="utf-8")


def _imports(module: str, source: str) -> set[str]:
    """Project modules that `module` imports (`import a.b`, `from a import b` where b may be a module)."""
    found: set[str] = set()
    is_package = _module_file(module) == PROJECT_ROOT.joinpath(*module.split("."), "__init__.py")
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if _module_file(name) is not None}


def source_closure(*modules: str) -> dict[str, str]:
    """Source text of `modules` and of every project module they import, transitively."""
    seen: dict[str, str] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = _source(name)
        todo.extend(_imports(name, seen[name]) - seen.keys())
    return seen


def code_version(*modules: str) -> str:
    """A code_version that changes whenever the source of these ops modules, or of any project module they import,
    changes: the UI then shows exactly the assets whose code changed as stale."""
    h = hashlib.sha256()
    for name, text in sorted(source_closure(*modules).items()):
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()[:12]
