"""The layout holds as the code is written: stages import only downward, no module circle, no symlink, and the
package list in pyproject.toml is the tree's.

Read from the source with `ast`, so an import inside a function (a lazy one) or under `TYPE_CHECKING` counts.
"""

import ast
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"flows": "shipyard.flows", "evals": "shipyard.evals", "safety": "shipyard.safety"}
STAGES = ("intake", "posttraining", "registry", "evals", "safety", "orchestration", "flows", "app", "demo")
CORE = "core"  # shipyard/*.py: settings, errors, digests, caches, progress, the checkpoint and event vocabulary …
MAY_IMPORT = {
    CORE: {CORE},
    "intake": {CORE},
    "posttraining": {CORE},
    "registry": {CORE},
    "evals": {CORE, "posttraining", "safety"},  # the runner judges safety tasks with the suite's judge
    "safety": {CORE, "posttraining"},
    "orchestration": {CORE, "intake", "posttraining", "registry", "evals", "safety", "flows"},
    "flows": {CORE, "intake", "posttraining", "registry", "evals", "safety", "orchestration"},  # orchestration's flows
    "app": {CORE, "intake", "posttraining", "registry", "evals", "safety", "orchestration", "flows"},
    "demo": {CORE, *STAGES},
}


def modules() -> dict[str, Path]:
    """Every module of the package, by its import name (the mapped top-level folders under shipyard.)."""
    found = {}
    for folder, package in {"shipyard": "shipyard", **MAPPED}.items():
        top = ROOT / folder
        for path in top.rglob("*.py"):
            parts = path.relative_to(top).parts
            if not all((top.joinpath(*parts[:n]) / "__init__.py").exists() for n in range(len(parts))):
                continue  # not in a package: lm-eval's task hooks, loaded by path
            name = [package, *path.relative_to(top).with_suffix("").parts]
            found[".".join(name[:-1] if name[-1] == "__init__" else name)] = path
    return found


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGES) else CORE


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The package's modules `module` imports (each with its line), wherever in the file the import is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])]
                )
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                yield name, node.lineno


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: {name for name, _ in imports(m, p, known)} for m, p in known.items()}


def test_each_stage_imports_only_the_stages_below_it() -> None:
    known = modules()
    assert {"shipyard.settings", "shipyard.intake.scan", "shipyard.flows.approval", "shipyard.evals.gate"} <= set(known)
    upward = [
        f"{known[m].relative_to(ROOT)}:{line}: {stage(m)} imports {name} ({stage(name)})"
        for m, path in known.items()
        for name, line in imports(m, path, known)
        if stage(name) != stage(m) and stage(name) not in MAY_IMPORT[stage(m)]
    ]
    assert upward == []


def test_no_module_imports_itself_round_a_circle() -> None:
    edges = graph()
    circles = []
    for start in edges:  # a depth-first walk from each module back to itself
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    circles.append(" -> ".join([*trail, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert circles == []


def test_nothing_but_the_demo_imports_the_demo_and_the_demo_plugs_in_by_entry_points() -> None:
    edges = graph()
    assert [m for m, names in edges.items() if stage(m) != "demo" and any(stage(n) == "demo" for n in names)] == []
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["shipyard.profiles"] == {"demo": "shipyard.demo.profile:DEMO"}
    assert project["entry-points"]["shipyard.commands"] == {"demo": "shipyard.demo.cli:register"}


def test_the_package_list_is_the_tree_and_no_file_is_a_symlink() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {m for m, p in modules().items() if p.name == "__init__.py"}
    assert sorted(setuptools["packages"]) == sorted(packages)
    assert setuptools["package-dir"] == MAPPED_DIRS
    staged = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert [line.split("\t")[1] for line in staged.splitlines() if line.startswith("120000")] == []


MAPPED_DIRS = {package: folder for folder, package in MAPPED.items()}
