"""The code's layout: no import cycles, commands that share helpers through one module, state per invocation."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vaecli"
SHARED_COMMAND_MODULES = {"vaecli.commands.options", "vaecli.commands.common"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:`, which only a type checker reads."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path) -> set[str]:
    """Every vaecli module a file imports at run time, at its top or inside a function."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vaecli"):
            found.add(node.module)
            # `from vaecli.commands import sample` imports the module vaecli.commands.sample.
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")).with_suffix(".py").exists()}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("vaecli")}
    return found


def _graph() -> dict[str, set[str]]:
    graph = {_module_name(path): _imports(path) for path in PACKAGE.rglob("*.py")}
    return {module: {d for d in deps if d in graph and d != module} for module, deps in graph.items()}


def test_no_import_cycles():
    graph = _graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for dependency in sorted(graph[module]):
            assert dependency not in path, "import cycle: " + " -> ".join([*path[path.index(dependency):], dependency])
            if dependency not in done:
                visit(dependency, [*path, dependency])
        done.add(module)

    for module in sorted(graph):
        visit(module, [module])


def test_commands_share_helpers_through_one_module_not_each_other():
    graph = _graph()
    for module, dependencies in graph.items():
        if module.startswith("vaecli.commands.") and module not in SHARED_COMMAND_MODULES:
            others = {d for d in dependencies if d.startswith("vaecli.commands.")} - SHARED_COMMAND_MODULES
            assert not others, f"{module} imports {sorted(others)}; move what they share to commands/common.py"


def test_quiet_does_not_leak_into_the_next_invocation(cli, tiny_model):
    # Both run in this process: the second must not inherit the first one's -q.
    quiet = cli("sample", "-m", tiny_model, "-n", "1", "-o", "out", "--seed", "1", "--device", "cpu", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    result = cli("info")
    assert result.exit_code == 0
    assert "using the bundled MNIST model" in result.stderr


def test_help_of_vae_and_every_command_stays_light():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from typer.main import get_command\n"
        "from vaecli.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0 and 'train' in r.stdout and 'info' in r.stdout, r.stdout\n"
        "for name in get_command(app).commands:\n"
        "    r = CliRunner().invoke(app, [name, '--help'])\n"
        "    assert r.exit_code == 0 and 'Usage' in r.stdout, (name, r.stdout, r.stderr)\n"
        "heavy = [m for m in ('torch', 'torchvision', 'sklearn', 'matplotlib', 'PIL') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


LIBRARY_PACKAGES = ("model", "training", "data", "store", "analysis", "figures", "runtime", "explore")


def test_the_model_package_imports_only_torch_the_config_and_itself():
    allowed = {"vaecli.config", "vaecli.errors"}
    for path in (PACKAGE / "model").glob("*.py"):
        for module in _imports(path):
            assert module.startswith("vaecli.model") or module in allowed, f"{path.name} imports {module}"
        tree = ast.parse(path.read_text())
        outside = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                   for alias in node.names} | {node.module.split(".")[0] for node in ast.walk(tree)
                                               if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
        third_party = outside - set(sys.stdlib_module_names) - {"__future__"}
        assert third_party <= {"torch", "vaecli"}, (path, third_party)


def test_library_packages_never_import_the_command_line_or_the_terminal():
    for package in LIBRARY_PACKAGES:
        for path in (PACKAGE / package).rglob("*.py"):
            upward = {m for m in _imports(path) if m.startswith(("vaecli.commands", "vaecli.terminal", "vaecli.cli"))}
            assert not upward, f"{path.relative_to(PACKAGE)} imports {sorted(upward)}"


def test_nothing_outside_the_model_package_asks_which_kind_of_model_it_holds():
    # One-layer and hierarchical models share one interface (model/interface.py); the config may still say
    # which settings apply to which architecture, but no code path branches on the kind of model.
    asks = re.compile(r"\bHVAE\b|\bis_hierarchical\b|\bHIERARCHICAL\b|\barch\s*==|\.arch\s+in\b|isinstance\([^)]*VAE")
    found = [f"{path.relative_to(PACKAGE)}:{number}" for path in PACKAGE.rglob("*.py")
             if path.parent.name != "model" and path.name != "config.py"
             for number, line in enumerate(path.read_text().splitlines(), 1) if asks.search(line)]
    assert found == []
