"""mypy over the whole package, the top-level flows/, evals/ and safety/ included under their module names.

Those folders are `shipyard.flows`, `shipyard.evals` and `shipyard.safety` by pyproject's package-dir, which mypy
cannot follow; here each of their files is handed to mypy with its module name, so imports resolve and errors name
the real paths. Options come from pyproject.toml, as for a plain `mypy` run. Run by `make check`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parents[1]
MAPPED = ("flows", "evals", "safety")


def in_package(folder: Path) -> bool:
    parts = folder.relative_to(ROOT).parts
    return all((ROOT.joinpath(*parts[: n + 1]) / "__init__.py").exists() for n in range(len(parts)))


def mapped_sources() -> list[BuildSource]:
    """Each file of the mapped folders' packages, named as it is imported (lm-eval's task hooks are not)."""
    sources = []
    for folder in MAPPED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if in_package(path.parent):
                parts = ["shipyard", *path.parent.relative_to(ROOT).parts]
                module = ".".join(parts if path.stem == "__init__" else [*parts, path.stem])
                sources.append(BuildSource(str(path.relative_to(ROOT)), module))
    return sources


def main() -> int:
    sources, options = process_options(["-p", "shipyard", *sys.argv[1:]])
    sources += mapped_sources()
    try:
        result = build.build(sources, options)
    except CompileError as exc:
        print("\n".join(exc.messages))
        return 2
    print("\n".join(result.errors))
    found = f"Found {len(result.errors)} errors" if result.errors else "Success: no issues"
    print(f"{found} in {len(sources)} source files")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
