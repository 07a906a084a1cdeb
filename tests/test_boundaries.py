"""The package's layer rules (services/layers.toml) hold for every import of every module under services/.

    .venv/bin/python -m pytest -q tests/test_boundaries.py

Imports are read with `ast`, so an import inside a function counts as much as one at the top, and nothing is
imported to check it. A failure names the file, the line, the imported module and the rule it breaks.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "services"  # the folder the import package `smf` maps to (setup.py)
RULES = tomllib.loads((PACKAGE / "layers.toml").read_text())
ROOT = "smf"


@dataclass(frozen=True)
class Violation:
    file: str  # relative to the repo, e.g. services/som/linearize.py
    line: int
    imported: str
    rule: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.imported} -- {self.rule}: {self.why}"


def module_of(rel: Path) -> str:
    """services/gan/server.py -> smf.gan.server; services/gan/v1/__init__.py -> smf.gan.v1."""
    parts = [ROOT, *rel.relative_to("services").with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, package: Path = PACKAGE) -> bool:
    """Whether a dotted smf name is a module or package of its own (not a name defined inside one)."""
    path = package.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_in(source: str, module: str, *, is_package: bool, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, imported smf module) for every import statement in `source`, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                anchor = module.split(".")[: len(module.split(".")) - (node.level - 1) - (0 if is_package else 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                # `from smf.gan import runs` imports the module smf.gan.runs; `from smf.datasets import make_dataset`
                # imports from the package face smf.datasets
                found.append((node.lineno, sub if is_module(sub, package) else base))
    smf = [(line, name) for line, name in found if name == ROOT or name.startswith(ROOT + ".")]
    return list(dict.fromkeys(smf))  # `from smf.x import a, b` is one import of smf.x


def module_strings(source: str) -> list[tuple[int, str]]:
    """(line, text) of string constants that are not docstrings or bare expression strings."""
    tree = ast.parse(source)
    bare = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in bare
    ]


def layer_of(area: str, rules: dict) -> str | None:
    if area == ROOT:
        return "foundation"  # the package root holds only __version__
    return next((layer for layer, areas in rules["layers"].items() if area in areas), None)


def area_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def published(name: str, entries: list[str]) -> bool:
    return any(name == e.removesuffix(".*") or (e.endswith(".*") and name.startswith(e[:-1])) for e in entries)


def check_import(rel: str, line: int, importer: str, imported: str, rules: dict) -> Violation | None:
    """The rule `importer` breaks by importing `imported`, or None."""
    src_area, dst_area = area_of(importer), area_of(imported)
    src, dst = layer_of(src_area, rules), layer_of(dst_area, rules)
    if src == "entry_points":
        return None
    if dst == "entry_points":
        return Violation(rel, line, imported, "entry-points-are-leaves", "only an entry point imports an entry point")
    if src == "foundation" and dst != "foundation":
        return Violation(rel, line, imported, "common-knows-no-service", "the foundation imports no service")
    if src == "services" and dst == "services" and dst_area != src_area:
        offered = rules["published"].get(dst_area, [])
        if not published(imported, offered):
            return Violation(
                rel,
                line,
                imported,
                "published-only",
                f"{src_area} may import {dst_area} only through {', '.join(offered) or 'nothing (it publishes none)'}",
            )
    return None


def check_file(rel: str, source: str, rules: dict = RULES, package: Path = PACKAGE) -> list[Violation]:
    """Every rule the module at `rel` (services/...) breaks, before the temporary allowances."""
    path = Path(rel)
    module = module_of(path)
    found = []
    for line, imported in imports_in(source, module, is_package=path.name == "__init__.py", package=package):
        if (v := check_import(rel, line, module, imported, rules)) is not None:
            found.append(v)
    if layer_of(area_of(module), rules) == "foundation":
        service_modules = tuple(f"{ROOT}.{s}" for s in rules["layers"]["services"])
        for line, text in module_strings(source):
            if text in service_modules or text.startswith(tuple(m + "." for m in service_modules)):
                found.append(Violation(rel, line, repr(text), "common-knows-no-service", "names a service's module"))
    return found


def package_files() -> list[Path]:
    return sorted(p.relative_to(REPO) for p in PACKAGE.rglob("*.py"))


def temporary(rules: dict = RULES) -> set[tuple[str, str]]:
    return {(t["file"], t["imports"]) for t in rules.get("temporary", [])}


def all_violations() -> list[Violation]:
    return [v for rel in package_files() for v in check_file(rel.as_posix(), (REPO / rel).read_text())]


def test_every_module_has_a_layer():
    areas = {area_of(module_of(rel)) for rel in package_files()}
    unlisted = sorted(a for a in areas if layer_of(a, RULES) is None)
    assert not unlisted, f"every-module-has-a-layer: add {unlisted} to [layers] in services/layers.toml"
    missing = sorted(set(RULES["layers"]["services"]) - set(RULES["published"]))
    assert not missing, f"every service says what it publishes: add {missing} to [published]"


def test_imports_follow_the_layer_rules():
    allowed = temporary()
    broken = [v for v in all_violations() if (v.file, v.imported) not in allowed]
    if broken:
        pytest.fail("forbidden imports (rules: services/layers.toml):\n" + "\n".join(map(str, broken)), pytrace=False)


def test_temporary_allowances_are_still_needed():
    used = {(v.file, v.imported) for v in all_violations()}
    stale = sorted(temporary() - used)
    assert not stale, f"these [[temporary]] entries in services/layers.toml match no import any more; delete: {stale}"


FORBIDDEN = {
    "top level": "import smf.gan.train\n",
    "inside a function": "def f():\n    from smf.gan.train import load_checkpoint\n",
    "module via from": "from smf.gan import train\n",
    "relative, into a service": "from ..gan import train\n",
}


@pytest.mark.parametrize("source", FORBIDDEN.values(), ids=FORBIDDEN.keys())
def test_a_forbidden_import_is_caught(source):
    [v] = check_file("services/som/example.py", source)
    assert (v.rule, v.imported, v.line) == ("published-only", "smf.gan.train", source.count("\n"))
    assert str(v).startswith("services/som/example.py:")


def test_each_rule_is_checked():
    def rules_broken(rel, source):
        return [v.rule for v in check_file(rel, source)]

    assert rules_broken("services/som/example.py", "from smf.gan.runs import x\nimport smf.gan.v1.gan_pb2\n") == []
    assert rules_broken("services/common/example.py", "from smf.rnn.client import RnnClient\n") == [
        "common-knows-no-service"
    ]
    assert rules_broken("services/common/example.py", 'TABLE = {"gan": "smf.gan.server"}\n') == [
        "common-knows-no-service"
    ]
    assert rules_broken("services/common/example.py", '"""Docstrings may say smf.gan.server."""\n') == []
    assert rules_broken("services/gan/example.py", "from smf.store_cli import x\n") == ["entry-points-are-leaves"]
    assert rules_broken("services/cli.py", "import smf.gan.train\nimport smf.serve\n") == []
    assert rules_broken("services/pipeline/example.py", "from smf.datasets import make_dataset\n") == []
    assert rules_broken("services/pipeline/example.py", "from smf.datasets.importer import x\n") == ["published-only"]
