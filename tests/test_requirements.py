"""requirements.txt names every third-party distribution the project's Python files import, so a fresh machine
(setup.sh, then `pip install -r requirements.txt`) runs everything."""
import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = {".git", ".venv", "venv", "__pycache__", "node_modules", "runs"}


def normalise(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): case, '-', '_' and '.' do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if not SKIPPED & set(p.relative_to(ROOT).parts[:-1]))


def imported_modules(path: Path) -> set[str]:
    """Return the top-level modules `path` imports absolutely, anywhere in it (lazy imports in functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def requirements(path: Path = ROOT / "requirements.txt") -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(normalise(re.split(r"[\s<>=!~;\[@]", line, maxsplit=1)[0]))
    return names


def missing_requirements(files: list[Path], listed: set[str]) -> dict[str, list[str]]:
    """Return {module: [why]} for each third-party module imported by `files` whose distribution is not `listed`."""
    own = {p.stem for p in files} | {p.parent.name for p in files if p.name == "__init__.py"}
    providers = packages_distributions()
    missing: dict[str, list[str]] = {}
    for path in files:
        for module in imported_modules(path) - own - set(sys.stdlib_module_names):
            distributions = providers.get(module)
            if not distributions:
                why = "no installed distribution provides it"
            elif not {normalise(d) for d in distributions} & listed:
                why = f"from {' or '.join(sorted(set(distributions)))}"
            else:
                continue
            missing.setdefault(module, []).append(f"{why}, imported by {path.relative_to(ROOT)}")
    return missing


def test_requirements_name_every_imported_distribution():
    missing = missing_requirements(project_files(), requirements())
    assert not missing, "requirements.txt does not list: " + "; ".join(
        f"{module} ({reasons[0]}{f' and {len(reasons) - 1} more' if len(reasons) > 1 else ''})"
        for module, reasons in sorted(missing.items()))


def test_a_requirement_removed_is_found(tmp_path):
    """The check can fail: without the line for soundfile, the files that import it are named."""
    lines = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if not line.startswith("soundfile")]
    (tmp_path / "requirements.txt").write_text("\n".join(lines) + "\n")
    missing = missing_requirements(project_files(), requirements(tmp_path / "requirements.txt"))
    assert set(missing) == {"soundfile"} and any("data_process.py" in why for why in missing["soundfile"])
