"""``ptmkit plugins new NAME``: generate a plugin package that installs, registers and passes its test.

The package is a separate distribution (src layout) with the ``ptmkit`` entry point, a plugin of
the chosen kind registered by decorator (``@register.<kind>(name)`` from ``ptmkit.api``) with a
typed config and a real (small) implementation, and a pytest file that runs the shared contract
checks of ``ptmkit.testing``. See docs/plugins.md for the guide that continues from here.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from . import API_VERSION, __version__
from .errors import PtmkitError
from .outputs import refuse_file_above, write_error

#: Kinds ``plugins new`` can generate (backbones and heads are fusion-like graph modules).
SCAFFOLD_KINDS = ("feature", "fusion", "loss")

#: Lowercase letters and digits, starting with a letter, single ``-`` or ``_`` between parts.
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_PREFIXES = ("ptmkit_plugins_", "ptmkit_plugin_", "ptmkit_")


@dataclass
class Scaffold:
    """What ``scaffold`` created."""

    path: Path
    distribution: str
    package: str
    plugin: str
    kind: str
    files: list[Path] = field(default_factory=list)

    def next_steps(self) -> str:
        use = {
            "feature": f"features: {{x: {{type: {self.plugin}}}}}",
            "fusion": f"model.nodes: {{fused: {{type: {self.plugin}, inputs: [a, b]}}}}",
            "loss": f"losses: [{{type: {self.plugin}}}]",
        }[self.kind]
        return (
            f"created {self.distribution} in {self.path}: {self.kind} plugin {self.plugin!r} "
            f"(package {self.package})\n"
            "next:\n"
            f"  cd {self.path}\n"
            "  pip install -e .          # registers the `ptmkit` entry point\n"
            "  pytest                    # the package's own tests\n"
            f"  ptmkit plugins list --kind {self.kind}\n"
            f"  in a recipe: {use}\n"
            "guide: docs/plugins.md in the ptmkit repository"
        )


def names(name: str) -> tuple[str, str, str]:
    """(distribution, import package, plugin name) for NAME, or a PtmkitError saying what is wrong.

    ``ptmkit-hydrophobic`` -> (``ptmkit-hydrophobic``, ``ptmkit_hydrophobic``, ``hydrophobic``).
    """
    if not NAME_RE.match(name):
        raise PtmkitError(
            f"invalid plugin package name {name!r}: use lowercase letters and digits, starting with "
            "a letter, with single '-' or '_' between parts (e.g. ptmkit-hydrophobic)"
        )
    package = name.replace("-", "_")
    if keyword.iskeyword(package):
        raise PtmkitError(f"invalid plugin package name {name!r}: {package!r} is a Python keyword")
    plugin = package
    for prefix in _PREFIXES:
        if package.startswith(prefix) and len(package) > len(prefix):
            plugin = package[len(prefix) :]
            break
    if keyword.iskeyword(plugin) or not plugin[0].isalpha():
        plugin = package
    return name, package, plugin


def class_name(plugin: str, kind: str) -> str:
    """CamelCase class name ending in the kind (``hydrophobic`` -> ``HydrophobicFeature``), so it
    never shadows the base classes the module imports and stays distinctive in cache keys."""
    camel = "".join(part.capitalize() for part in plugin.split("_"))
    suffix = kind.capitalize()
    return camel if camel.endswith(suffix) and camel != suffix else camel + suffix


def _check_free(package: str, plugin: str, kind: str) -> None:
    """Refuse names that would shadow an importable module or clash with a registered plugin."""
    if importlib.util.find_spec(package) is not None:
        raise PtmkitError(
            f"a module named {package!r} is already importable in this environment; choose another "
            "NAME (or `pip uninstall` the package that provides it)"
        )
    from .hooks import get_registry
    from .registry import MODULE_KINDS

    namespace = MODULE_KINDS if kind in MODULE_KINDS else (kind,)
    for spec in get_registry():
        if plugin in (spec.name, *spec.aliases) and spec.kind in namespace:
            what = "named" if plugin == spec.name else f"{spec.name!r} with the old name"
            raise PtmkitError(
                f"a {spec.kind} plugin {what} {plugin!r} is already registered by {spec.provider} "
                f"{spec.version}; choose another NAME"
            )


def scaffold(name: str, kind: str = "feature", directory: str | Path = ".") -> Scaffold:
    """Write the package NAME into ``directory/NAME``; never overwrites anything."""
    if kind not in SCAFFOLD_KINDS:
        raise PtmkitError(f"unknown plugin kind {kind!r}; `plugins new` makes {', '.join(SCAFFOLD_KINDS)}")
    dist, package, plugin = names(name)
    target = Path(directory) / name
    if target.exists():
        raise PtmkitError(f"{target} already exists; refusing to overwrite it (choose another NAME or --dir)")
    _check_free(package, plugin, kind)
    values = {
        "dist": dist,
        "package": package,
        "plugin": plugin,
        "cls": class_name(plugin, kind),
        "kind": kind,
        "api": str(API_VERSION),
        "ptmkit_min": ".".join(__version__.split(".")[:2]),
        "summary": _SUMMARY[kind],
    }
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        ".gitignore": _GITIGNORE,
        f"src/{package}/__init__.py": _INIT[kind],
        f"tests/test_{package}.py": _TEST[kind],
    }
    refuse_file_above(target.parent, f"--dir {target.parent}")
    # written into a hidden sibling and renamed once complete: a failure leaves no half package
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        for rel, template in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(template).substitute(values), encoding="utf-8")
        staging.rename(target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise write_error(target, exc) from None
    written = [target / rel for rel in files]
    return Scaffold(target, dist, package, plugin, kind, written)


# ---------------------------------------------------------------------------- templates
_SUMMARY = {
    "feature": "residue-set indicator feature",
    "fusion": "learned weighted-sum fusion",
    "loss": "positive-weighted BCE loss",
}

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "${dist}"
version = "0.1.0"
description = "ptmkit plugin: ${summary} `${plugin}`"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["ptmkit>=${ptmkit_min}"]

[project.optional-dependencies]
test = ["pytest>=8"]

# ptmkit finds the plugin through this entry point: it imports the module, checks its
# PTMKIT_API_VERSION and registers the classes marked with @register.<kind>(name).
[project.entry-points.ptmkit]
${plugin} = "${package}"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["src"]

[tool.ruff]
line-length = 110
src = ["src", "tests"]

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP", "SIM"]
"""

_GITIGNORE = """\
__pycache__/
*.egg-info/
build/
dist/
"""

_README = """\
# ${dist}

A ptmkit plugin package: ${kind} plugin `${plugin}` (${summary}).

```bash
pip install -e .                     # registers the `ptmkit` entry point
pytest                               # this package's tests
ptmkit plugins list --kind ${kind}   # shows `${plugin}` from ${dist}
python -m pip wheel --no-deps -w dist .   # a wheel to upload (`twine upload dist/*`)
```

The plugin lives in `src/${package}/__init__.py`. The module declares the plugin API it is
written for (`PTMKIT_API_VERSION = ${api}`) and registers the plugin by decorating its class with
`@register.${kind}("${plugin}")`; everything it uses comes from `ptmkit.api`. Its tests use the
shared contract checks of `ptmkit.testing`. Change the implementation, keep its tests green, and
bump `version` on the class whenever the output for the same config changes. The plugin author's
guide is `docs/plugins.md` in the ptmkit repository.
"""

_INIT = {
    "feature": '''"""A ptmkit feature plugin: 1.0 where the residue is in a configurable set, else 0.0."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from ptmkit.api import N_SYMBOLS, STANDARD, Feature, PluginConfig, SiteTable, encode_windows, register
from pydantic import Field, field_validator

#: The plugin API this package is written for; ptmkit refuses the package if it cannot load it.
PTMKIT_API_VERSION = ${api}


@register.feature("${plugin}")  # the name recipes use as `type`
class ${cls}(Feature):
    """1.0 where the residue is one of ``residues``, else 0.0; D = 1; padding is 0."""

    class Config(PluginConfig):
        residues: str = Field(
            "AILMFVW", min_length=1, description="one-letter codes that encode to 1.0 (default: hydrophobic)"
        )

        @field_validator("residues")
        @classmethod
        def _standard(cls, value: str) -> str:
            bad = sorted(set(value) - set(STANDARD))
            if bad:
                raise ValueError(f"not standard amino-acid letters: {''.join(bad)}")
            return value

    config: Config
    #: part of the cache key: bump it whenever the output for the same config changes
    version: ClassVar[str] = "1"
    #: size D of the last axis of ``encode``'s output
    dim = 1

    def encode(self, table: SiteTable) -> torch.Tensor:
        # residue codes [N, W]: 0-19 the standard letters in STANDARD order, 20 other, 21 padding
        codes = torch.from_numpy(encode_windows(table.windows).astype(np.int64))
        values = torch.zeros(N_SYMBOLS)  # one value per code; the padding row stays 0
        values[[STANDARD.index(a) for a in self.config.residues]] = 1.0
        return values[codes].unsqueeze(-1)  # [N, W, 1] float32
''',
    "fusion": '''"""A ptmkit fusion plugin: a learned weighted sum of inputs of equal size."""

from __future__ import annotations

from typing import ClassVar

import torch
from ptmkit.api import GraphModule, PluginConfig, register
from pydantic import Field
from torch import nn

#: The plugin API this package is written for; ptmkit refuses the package if it cannot load it.
PTMKIT_API_VERSION = ${api}


@register.fusion("${plugin}")  # the name recipes use as a node `type`
class ${cls}(GraphModule):
    """out = sum_i softmax(w)_i * x_i over 2+ inputs [N, W, D] of equal size; output D."""

    class Config(PluginConfig):
        learn: bool = Field(True, description="learn the weights w (false: a plain mean of the inputs)")

    #: (minimum, maximum) number of inputs; None = no maximum
    n_inputs: ClassVar[tuple[int, int | None]] = (2, None)

    def __init__(self, config: Config, in_dims: list[int]) -> None:
        super().__init__(config, in_dims)
        if len(self.in_dims) < 2 or len(set(self.in_dims)) != 1:
            # ptmkit reports a ValueError with the node's place in the recipe and the plugin name
            raise ValueError(f"needs 2 or more inputs of equal size, got sizes {self.in_dims}")
        self.weights = nn.Parameter(torch.zeros(len(self.in_dims)), requires_grad=config.learn)
        #: size of every output; "out" is what a bare reference to the node reads
        self.output_dims = {"out": self.in_dims[0]}

    def forward(self, inputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.weights, dim=0)
        out = (torch.stack(inputs, dim=-1) * w).sum(dim=-1)
        return out * mask.unsqueeze(-1).to(out.dtype)  # keep padding positions at zero
''',
    "loss": '''"""A ptmkit loss plugin: binary cross-entropy with a weight on positive examples."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from ptmkit.api import Loss, PluginConfig, register
from pydantic import Field

#: The plugin API this package is written for; ptmkit refuses the package if it cannot load it.
PTMKIT_API_VERSION = ${api}


@register.loss("${plugin}")  # the name recipes use as a loss `type`
class ${cls}(Loss):
    """BCE on logits with positive examples weighted by ``pos_weight``; mean over examples."""

    class Config(PluginConfig):
        pos_weight: float = Field(1.0, gt=0, description="weight of positive examples (1 = plain BCE)")
        input: str = Field("logits", description="model output to score: 'logits' or a node reference")

    config: Config

    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        x = outputs[self.config.input]
        if x.dim() == 2 and x.shape[1] == 1:  # [N, 1] -> [N]
            x = x.squeeze(1)
        weight = torch.tensor(self.config.pos_weight, dtype=x.dtype)
        return F.binary_cross_entropy_with_logits(x, labels.to(x.dtype), pos_weight=weight)
''',
}

_TEST_REGISTRATION = """

def test_registers_under_its_name():
    # ptmkit's built-ins plus this package's entry point, installed or not
    registry = registry_with("${package}", "${dist}")
    assert not registry.broken, registry.broken
    spec = registry.get("${kind}", "${plugin}")
    assert spec.obj is ${cls}
    assert spec.provider == "${dist}"
    assert ${package}.PTMKIT_API_VERSION == ptmkit.API_VERSION
"""

_TEST = {
    "feature": """import ptmkit
import pytest
import torch
from ptmkit.testing import check_feature, registry_with, window_table
from pydantic import ValidationError

import ${package}
from ${package} import ${cls}


def test_encodes_one_value_per_residue_and_zero_padding():
    feature = ${cls}(${cls}.Config(residues="AL"))
    out = feature.encode(window_table(["--ALK", "LXGAA"]))
    expected = torch.tensor([[0, 0, 1, 1, 0], [1, 0, 0, 1, 1]], dtype=torch.float32)
    torch.testing.assert_close(out[..., 0], expected)


def test_meets_the_feature_contract():
    # shape [N, W, dim], float32, zeros at padding, deterministic, stable cache key, empty table
    default = ${cls}(${cls}.Config())
    basic = ${cls}(${cls}.Config(residues="K"))
    check_feature(default)
    check_feature(basic)
    assert default.cache_key() != basic.cache_key()  # the key follows the config


def test_bad_config_is_refused():
    with pytest.raises(ValidationError, match="not standard"):
        ${cls}.Config(residues="AB")
"""
    + _TEST_REGISTRATION,
    "fusion": """import ptmkit
import pytest
import torch
from ptmkit.testing import registry_with, standard_tests

import ${package}
from ${package} import ${cls}

# (id, node class or type name, input dims, config, size of "out")
CASES = [("two", ${cls}, [4, 4], {}, 4), ("three", ${cls}, [3, 3, 3], {}, 3)]
# output shapes, gradients to every parameter, padding never leaking, determinism
test_shapes, test_gradients, test_padding, test_deterministic = standard_tests(CASES)


def test_plain_mean_without_learning():
    node = ${cls}(${cls}.Config(learn=False), [4, 4, 4])
    xs = [torch.randn(2, 5, 4) for _ in range(3)]
    torch.testing.assert_close(node(xs, torch.ones(2, 5, dtype=torch.bool)), sum(xs) / 3)


def test_inputs_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match="equal size"):
        ${cls}(${cls}.Config(), [4, 5])
"""
    + _TEST_REGISTRATION,
    "loss": """import ptmkit
import pytest
import torch
import torch.nn.functional as F
from ptmkit.testing import check_loss, registry_with
from pydantic import ValidationError

import ${package}
from ${package} import ${cls}

LOGITS = torch.tensor([2.0, -1.0, 0.5, -3.0])
LABELS = torch.tensor([1.0, 0.0, 0.0, 1.0])


def test_weight_one_is_plain_bce_and_weighting_raises_positive_errors():
    plain = ${cls}(${cls}.Config())
    heavy = ${cls}(${cls}.Config(pos_weight=3.0))
    value = plain({"logits": LOGITS}, LABELS)
    torch.testing.assert_close(value, F.binary_cross_entropy_with_logits(LOGITS, LABELS))
    assert heavy({"logits": LOGITS}, LABELS) > value


def test_meets_the_loss_contract():
    # a finite scalar, gradients reaching its inputs, deterministic; also on a node's output [N, 1]
    check_loss(${cls})
    on_node = ${cls}(${cls}.Config(input="head", pos_weight=2.0))
    check_loss(on_node, outputs={"head": torch.randn(8, 1)})


def test_extreme_logits_stay_finite():
    loss = ${cls}(${cls}.Config())
    assert torch.isfinite(loss({"logits": torch.tensor([1e4, -1e4])}, torch.tensor([0.0, 1.0])))


def test_bad_config_is_refused():
    with pytest.raises(ValidationError):
        ${cls}.Config(pos_weight=0)
"""
    + _TEST_REGISTRATION,
}
