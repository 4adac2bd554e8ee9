"""resnorm.lab.registry and the lab's layering: one list of model families, room for more, no import
circles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import yaml

from resnorm.cli import main
from resnorm.lab import registry
from resnorm.lab.config import ConfigError, config_for

SRC = Path(__file__).resolve().parents[1] / "src" / "resnorm"


def test_every_family_has_a_valid_default_recipe():
    for family in registry.families():
        config = config_for(family.name)
        assert config.model == family.name and config.family is family
        assert family.task in registry.TASKS
        if family.depth_field is not None:
            assert family.depth_of(config.to_dict()) == getattr(config, family.depth_field)
    assert registry.study_aliases() == {"resnet-cifar": "resnet-cifar", "mlp": "residual-mlp", "gpt": "gpt",
                                        "hf": "hf"}  # hf: resnorm.lab.hf, a plugin (compare --model hf:TYPE)
    with pytest.raises(ConfigError, match="expected one of"):
        registry.get("transformer")


def test_design_fields_per_family():
    cifar, gpt = registry.get("resnet-cifar"), registry.get("gpt")
    assert cifar.design_fields("none", "batchnorm") == {"residual": False, "norm": "batchnorm"}
    assert gpt.design_fields("post", "rmsnorm") == {"placement": "post", "norm": "rmsnorm"}
    assert registry.design_name({"model": "resnet-cifar", "residual": False, "norm": "none"}) == "plain"
    assert registry.design_name({"model": "gpt", "placement": "pre", "norm": "layernorm"}) == "pre-norm"


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (imports for type hints never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test).endswith("TYPE_CHECKING"):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _imports(path: Path) -> set[str]:
    """Every resnorm module ``path`` imports when it runs, at the top or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("resnorm"))
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [module])
            if module.startswith("resnorm"):
                found.add(module)
                found.update(f"{module}.{a.name}" for a in node.names)
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_lab_has_no_import_circle_and_respects_the_layers():
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {name: {m for m in _imports(path) if m in modules and m != name}
             for name, path in modules.items()}
    lab = {n for n in graph if n.startswith("resnorm.lab.")}
    # no cycle among the lab's modules (lazy imports inside functions count too)
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node] & lab:
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for name in sorted(lab):
        if name not in state:
            visit(name, [])
    # lower layers never import higher ones: kernels <- functional <- nn <- models <- lab <- cli
    lower = ("resnorm.kernels", "resnorm.functional", "resnorm.nn", "resnorm.models", "resnorm.data")
    for name, deps in graph.items():
        if name.startswith(lower):
            assert not any(d.startswith(("resnorm.lab", "resnorm.cli")) for d in deps), (name, deps)
        if name.startswith("resnorm.lab"):
            assert "resnorm.cli" not in deps, name
    # the one private cross-module use the old code had (report -> plots._ordered) is gone
    assert "_ordered" not in (SRC / "lab" / "report.py").read_text()


# ----------------------------------------------------------------------------------------------
# a family from elsewhere, with model types (as a Hugging Face family would register itself)


class TinyClassifier(torch.nn.Module):
    def __init__(self, in_features, classes, depth):
        super().__init__()
        self.inp = torch.nn.Linear(in_features, 8)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(depth))
        self.head = torch.nn.Linear(8, classes)

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = h + torch.relu(block(h))
        return self.head(h)


def _build_toy(config, data):
    depth = {"small": 1, "large": 3}[config.model_type]
    return TinyClassifier(data.in_features, data.num_classes, depth)


@pytest.fixture()
def toy_family():
    family = registry.register(registry.ModelFamily(
        name="toy", task="image", layout="flat", build=_build_toy, model_types=("small", "large"),
        summary="a test family with two sizes", depth_field=None,
        defaults=dict(data="digits", optimizer="adam", lr=1e-3, batch_size=64, steps=3, eval_every=3,
                      probe_every=1, tensorboard=False, device="cpu")))
    yield family
    registry._FAMILIES.pop("toy", None)


def test_a_registered_family_trains_from_the_command_line(capsys, tmp_path, toy_family):
    out = tmp_path / "run"
    assert main(["train", "toy", "large", "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["model"], saved["model_type"]) == ("toy", "large")
    probe = [line for line in (out / "metrics.jsonl").read_text().splitlines() if '"probe"' in line][0]
    assert probe.count("blocks.") == 3
    capsys.readouterr()
    assert main(["train", "toy", "--out", str(tmp_path / "r2")]) == 2
    assert "small, large" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="has no model types"):
        config_for("residual-mlp", model_type="large")
