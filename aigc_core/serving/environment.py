"""What a logged pyfunc model needs to load where this project is not installed.

A model is served by `mlflow models serve` (any env manager but `local`) or `mlflow models
build-docker` in an environment built from the model alone: its `requirements.txt` and its
`code/` folder. So the model carries:

- the project modules its pyfunc file imports, with the packages above them (importing a
  submodule runs their `__init__`), copied under `code/aigc_core/` (MLflow `code_paths`; MLflow
  puts `code/` first on `sys.path` when it loads the model);
- one pinned requirement per third-party distribution those modules import, and nothing else.
  Never this project's distribution: its name on the public package index belongs to an
  unrelated project, and installing it would not give `aigc_core` anyway.

Both are read from the source, not from a live import: every `import` statement of the pyfunc
file and, transitively, of the project modules it reaches, function bodies included (the
pyfunc files import lazily), except under `if TYPE_CHECKING:`. Imports by name at run time
(`importlib.import_module`) are not followed; the loading tests would catch one. The one such
import on the serving path, `aigc_core.families` loading its built-in family modules by name, is
known (`IMPORTED_BY_NAME`): those modules ship with the package. (Family modules import the
evaluation stack by name on purpose, so that a served model does not carry it.)

Pins are the installed versions without a local label: torch `2.13.0+cpu` is required as
`torch==2.13.0`, which PyPI serves (a CUDA build on Linux) and which a CPU build installed first
from the PyTorch CPU index also meets (PEP 440 ignores local labels when the specifier has none).
"""

from __future__ import annotations

import ast
import functools
import re
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "aigc_core"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../aigc_core
PROJECT_DISTRIBUTION = "aigc-pipeline"  # ours locally; someone else's on the public index

# import name -> the distribution to require, where several installed distributions provide
# that name. mlflow, mlflow-skinny and mlflow-tracing all install files under `mlflow/`; loading
# a pyfunc and its scoring server (FastAPI, uvicorn) need mlflow-skinny only, not the tracking
# server's Flask, SQLAlchemy, scikit-learn, ...
DISTRIBUTION_OF = {"mlflow": "mlflow-skinny"}


def _builtin_families() -> list[str]:
    from aigc_core.families import BUILTIN

    return [f"{PACKAGE}.families.{name}" for name in BUILTIN]


# project package -> the modules it imports by name at run time (not visible to the scanner)
IMPORTED_BY_NAME = {f"{PACKAGE}.families": _builtin_families}


@dataclass(frozen=True)
class ModelEnvironment:
    modules: tuple[str, ...]  # project modules the pyfunc reaches, packages included, sorted
    imports: tuple[str, ...]  # top-level names of the third-party packages they import
    requirements: tuple[str, ...]  # one "name==version" per distribution of those imports


def model_environment(pyfunc: Path) -> ModelEnvironment:
    """The project modules and pinned third-party requirements that `pyfunc` (a models-from-code
    file) needs, following its imports through the project's modules."""
    modules: set[str] = set()
    imports: set[str] = set()
    todo: list[tuple[Path, str | None]] = [(Path(pyfunc), None)]  # loaded by path: no name
    while todo:
        path, module = todo.pop()
        for name, is_module in _imported_names(path, module):
            top = name.partition(".")[0]
            if top == PACKAGE:
                for m in _module_and_packages(name, is_module, path):
                    found = [m, *(IMPORTED_BY_NAME[m]() if m in IMPORTED_BY_NAME else ())]
                    for f in found:
                        if f not in modules:
                            modules.add(f)
                            todo.append((_module_file(f), f))
            elif top not in sys.stdlib_module_names:
                imports.add(top)
    return ModelEnvironment(
        modules=tuple(sorted(modules)),
        imports=tuple(sorted(imports)),
        requirements=tuple(pinned_requirements(imports)),
    )


def stage_code(modules: Iterable[str], dst: Path) -> Path:
    """Copy the modules' files into `dst/aigc_core/`, keeping the package layout, and return that
    folder: the one code path to log (MLflow copies it to the model's `code/aigc_core/`)."""
    for m in modules:
        src = _module_file(m)
        out = dst / PACKAGE / src.relative_to(PACKAGE_DIR)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
    return dst / PACKAGE


def pinned_requirements(import_names: Iterable[str]) -> list[str]:
    """Sorted "distribution==version" for the installed distributions that provide the
    top-level import names (version without its local label)."""
    from importlib.metadata import PackageNotFoundError, version

    provided = _packages_distributions()
    out = set()
    for name in import_names:
        dist = DISTRIBUTION_OF.get(name)
        if dist is None:
            found = sorted({canonical_name(d) for d in provided.get(name, ())})
            if len(found) != 1:
                raise ValueError(
                    f"the served model imports {name!r}, provided by "
                    f"{found or 'no installed distribution'}: install it, or name the one to "
                    f"require in {__name__}.DISTRIBUTION_OF"
                )
            dist = found[0]
        if canonical_name(dist) == PROJECT_DISTRIBUTION:
            raise ValueError(
                f"the served model imports {name!r} from this project's own distribution: move "
                f"that code under {PACKAGE}/ so the model ships it as code"
            )
        try:
            v = version(dist)
        except PackageNotFoundError:
            raise ValueError(f"the served model needs {dist!r}, which is not installed") from None
        out.add(f"{canonical_name(dist)}=={v.split('+', 1)[0]}")
    return sorted(out)


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()  # reads every installed distribution's file list: ~0.5 s


def canonical_name(dist: str) -> str:
    """A distribution name as PEP 503 compares them: "Pillow" and "pillow" are one."""
    return re.sub(r"[-_.]+", "-", dist).lower()


def _module_file(module: str) -> Path | None:
    """The source file of a project module or package, or None when there is none."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for f in (base / "__init__.py", base.parent / f"{base.name}.py"):
        if f.is_file():
            return f
    return None


def _module_and_packages(name: str, is_module: bool, importer: Path) -> list[str]:
    """`name` and each package above it; when `is_module` is false (`c` of `from a.b import c`),
    `name` may also be a name that its package defines, not a module."""
    parts = name.split(".")
    out = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    if not is_module and _module_file(name) is None:
        out.pop()
    for m in out:
        if _module_file(m) is None:
            raise ValueError(f"{importer} imports {name}, but {PACKAGE_DIR} has no module {m}")
    return out


def _imported_names(path: Path, module: str | None) -> Iterator[tuple[str, bool]]:
    """(absolute dotted name, whether it must be a module) of each import in the file: for
    `from a import b`, ("a", True) and ("a.b", False)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), str(path))
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, True) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if module is None:
                    raise ValueError(f"{path}: a relative import in a file loaded by path")
                package = module if Path(path).name == "__init__.py" else module.rpartition(".")[0]
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if base == "__future__":
                continue
            yield base, True
            yield from ((f"{base}.{a.name}", False) for a in node.names if a.name != "*")


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under `node`, skipping the bodies of `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        yield child
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for c in child.orelse:
                yield c
                yield from _walk(c)
            continue
        yield from _walk(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )
