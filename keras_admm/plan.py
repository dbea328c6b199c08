"""PruningPlan: which layer gets which sparsity.

A plan is an ordered list of rules. A rule matches layers by exact name, by a
glob ("conv*"), or by class (`keras.layers.Conv2D`, which also matches
subclasses; "class:Conv2D" in the text form of `PruningPlan.parse`); its
sparsity is a `keras_admm.sparsity.Sparsity`, its text form, or None to exclude
the layer. The first matching rule decides.

`plan.resolve(model)` checks the rules against a model and returns a resolved
plan: the same rules plus one `LayerTarget` per pruned layer (kernel variable
path, shape and layout). ADMMWrapper, ADMMRegularizer and hard_prune work on
resolved plans; `PruningPlan.uniform(model, ...)` returns one directly.

Example:

>>> import keras
>>> from keras_admm import PruningPlan
>>> model = keras.Sequential([keras.Input((28, 28, 1)),
...     keras.layers.Conv2D(8, 3, name="conv1"),
...     keras.layers.Conv2D(16, 3, name="conv2"),
...     keras.layers.Flatten(), keras.layers.Dense(10, name="fc")])
>>> plan = PruningPlan({"conv2": "filter_shape:0.5:0.5", "fc": None}).resolve(model)
>>> [t.layer_name for t in plan.targets]
['conv2']
>>> PruningPlan.uniform(model, "filter:0.5").layer_names
['conv2']
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os

import keras

from keras_admm import registry
from keras_admm import sparsity as sparsity_lib
from keras_admm.tables import dump_json

__all__ = [
    "PruningPlan",
    "LayerTarget",
    "as_plan",
    "find_variable",
    "planned_kernels",
    "prunable_layers",
    "register_target_planner",
]

_GLOB_CHARS = set("*?[")
_TARGET_PLANNER = None  # keras_admm.targeting.plan_for_target, once imported


def register_target_planner(planner) -> None:
    """Makes `planner` the function behind `PruningPlan.for_target`.

    keras_admm.targeting calls this on import, so that the plan (below it in
    the package) imports nothing of profiling or pruning.
    """
    global _TARGET_PLANNER
    _TARGET_PLANNER = planner


@dataclasses.dataclass(frozen=True)
class LayerTarget:
    """One pruned layer of a resolved plan.

    Attributes:
        layer_name: the layer's name in the model.
        layer_class: the layer's class name.
        weight_path: `variable.path` of the pruned kernel (the optimizer key).
        kernel_shape: the kernel's shape.
        layout: the kernel's filter and input-channel axes.
        sparsity: the Sparsity to enforce.
    """

    layer_name: str
    layer_class: str
    weight_path: str
    kernel_shape: tuple[int, ...]
    layout: sparsity_lib.KernelLayout
    sparsity: sparsity_lib.Sparsity

    def to_dict(self) -> dict:
        return {
            "layer_name": self.layer_name,
            "layer_class": self.layer_class,
            "weight_path": self.weight_path,
            "kernel_shape": list(self.kernel_shape),
            "layout": self.layout.to_dict(),
            "sparsity": str(self.sparsity),
        }

    @classmethod
    def from_dict(cls, data: dict) -> LayerTarget:
        missing = [
            key
            for key in (
                "layer_name",
                "layer_class",
                "weight_path",
                "kernel_shape",
                "layout",
                "sparsity",
            )
            if key not in data
        ]
        if missing:
            raise ValueError(
                f"A resolved plan's target {data.get('layer_name', data)!r} lacks "
                f"{', '.join(missing)}. Drop 'targets' from the JSON and resolve the "
                "rules against the model again: PruningPlan.from_json(text)"
                ".resolve(model)."
            )
        return cls(
            layer_name=data["layer_name"],
            layer_class=data["layer_class"],
            weight_path=data["weight_path"],
            kernel_shape=tuple(data["kernel_shape"]),
            layout=sparsity_lib.KernelLayout.from_dict(data["layout"]),
            sparsity=sparsity_lib.parse(data["sparsity"]),
        )


def _layers_in_order(layer, seen):
    """Sub-layers of `layer`, depth first, in the order the model lists them."""
    for child in getattr(layer, "_layers", []):
        if id(child) in seen:
            continue
        seen.add(id(child))
        yield child
        yield from _layers_in_order(child, seen)


def all_layers(model) -> list:
    """Every layer inside `model`, nested models included, in model order."""
    return list(_layers_in_order(model, set()))


def prunable_layers(model) -> list:
    """Every layer of `model` (nested models included) with a prunable kernel."""
    return [layer for layer in all_layers(model) if registry.kernel_spec(layer)]


def as_plan(plan, owner="keras_admm") -> PruningPlan:
    """`plan` itself, or a PruningPlan built from a dict of rules.

    Raises:
        TypeError: anything else, naming `owner` and how to build a plan.
    """
    if isinstance(plan, dict):
        plan = PruningPlan(plan)
    if not isinstance(plan, PruningPlan):
        raise TypeError(
            f"{owner} needs a keras_admm.PruningPlan (or a dict of rules), got "
            f"{type(plan).__name__}: {plan!r}. Build one with "
            "PruningPlan({'conv2': 'filter:0.5'}) or PruningPlan.uniform(model, ...)."
        )
    return plan


def find_variable(variables, path):
    """The variable at `path`, else the one variable ending in its "layer/name".

    The fallback lets a plan or masks computed on one instance of an
    architecture ("sequential/conv2/kernel") fit a rebuilt one
    ("sequential_2/conv2/kernel"). Returns None when there is no single match.

    Raises:
        ValueError: several variables have exactly this path (layers of the
            same name, e.g. one inside a nested model, after a save and load):
            binding to either could put a mask on the wrong layer.
    """
    exact = [v for v in variables if v.path == path]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise ValueError(
            f"{len(exact)} variables of the model have the path '{path}' (layers "
            "with the same name, e.g. one inside a nested model, share it after "
            "a save and load), so a plan or mask for it could bind to the wrong "
            "layer. Give the layers unique names, e.g. keras.layers.Conv2D(..., "
            "name='head_conv'), then prune again."
        )
    tail = "/".join(path.split("/")[-2:])
    candidates = [v for v in variables if v.path == tail or v.path.endswith("/" + tail)]
    return candidates[0] if len(candidates) == 1 else None


class _ClassName(str):
    """A class rule's key when only the class name is known (read from JSON)."""


def _rule_key(key) -> tuple[str, str]:
    """('class' | 'name' | 'glob', text) for a rule key."""
    if isinstance(key, _ClassName):
        return ("class", str(key))
    if isinstance(key, type):
        if not issubclass(key, keras.Layer):
            raise TypeError(f"A plan rule's class must be a keras.Layer, got {key!r}.")
        return ("class", key.__name__)
    if not isinstance(key, str) or not key:
        raise TypeError(
            f"A plan rule key must be a layer name, a glob or a layer class, got "
            f"{key!r}."
        )
    return ("glob" if _GLOB_CHARS & set(key) else "name", key)


def _check_nm_reduces(spec, layout, variable, layer_name):
    """N:M only where its blocks lie along a dot product's reduction axis."""
    if not isinstance(spec, sparsity_lib.NM):
        return
    normalized = layout.normalized(len(variable.shape))
    if set(normalized.channel_axes) & set(normalized.filter_axes):
        raise ValueError(
            f"{spec} cannot prune layer '{layer_name}': its input-channel axis is "
            "also a filter axis (a depthwise kernel), so each block of "
            f"{spec.m} would span {spec.m} separate filters instead of one dot "
            "product, which no N:M hardware speeds up. Use Filter (whole channels) "
            f"or Unstructured for this layer, or exclude it before a glob or class "
            f"rule: {{'{layer_name}': None, ...}}."
        )


def _optional_sparsity(value):
    return None if value is None else sparsity_lib.parse(value)


class PruningPlan:
    """Rules from layer names, globs or classes to sparsity types.

    Args:
        rules: a mapping {key: sparsity} or a list of (key, sparsity) pairs. A
            key is a layer name, a glob such as "conv*", or a layer class. A
            sparsity is a Sparsity, its text form ("filter:0.5"), or None to
            exclude matching layers. The first matching rule decides.
        targets: resolved per-layer targets (set by `resolve`; leave as None).
    """

    def __init__(self, rules=None, targets=None):
        if isinstance(rules, str):
            raise TypeError(
                f"PruningPlan takes rules such as {{'conv2': 'filter:0.5'}}, got the "
                f"string {rules!r}. For a plan's JSON use PruningPlan.from_json."
            )
        pairs = rules.items() if isinstance(rules, dict) else (rules or [])
        self.rules = []
        for pair in pairs:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(
                    f"A plan rule must be a (key, sparsity) pair, got {pair!r}."
                )
            key, value = pair
            kind, text = _rule_key(key)
            try:
                spec = _optional_sparsity(value)
            except (TypeError, ValueError) as error:
                raise type(error)(f"Plan rule {text!r}: {error}") from error
            self.rules.append((kind, text, spec))
        self.targets = None if targets is None else list(targets)

    # ----------------------------------------------------------------- building
    @classmethod
    def uniform(
        cls, model, sparsity, skip_first=True, skip_last=True, layer_types=None
    ):
        """One sparsity for every prunable layer, resolved against `model`.

        Args:
            model: a built Keras model.
            sparsity: a Sparsity or its text form.
            skip_first: leave the first prunable layer dense (it is cheap and
                sensitive).
            skip_last: leave the last prunable layer (the classifier) dense.
            layer_types: optional tuple of layer classes to restrict to.

        Returns:
            A resolved PruningPlan with one exact-name rule per pruned layer.
        """
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"PruningPlan.uniform needs a built keras.Model, got {model!r}. "
                "Load a file first: keras.saving.load_model(path)."
            )
        spec = sparsity_lib.parse(sparsity)
        layers = prunable_layers(model)
        if layer_types is not None:
            if isinstance(layer_types, type):
                layer_types = (layer_types,)
            layer_types = tuple(layer_types)
            if not all(
                isinstance(t, type) and issubclass(t, keras.Layer) for t in layer_types
            ):
                raise TypeError(
                    f"layer_types must be keras.Layer classes, got {layer_types!r}; "
                    "e.g. layer_types=(keras.layers.Conv2D,)."
                )
            layers = [layer for layer in layers if isinstance(layer, layer_types)]
        chosen = layers[1 if skip_first else 0 : len(layers) - 1 if skip_last else None]
        if not chosen:
            raise ValueError(
                f"PruningPlan.uniform found no layer to prune in model '{model.name}' "
                f"({len(layers)} prunable layer(s) before skipping the first/last). "
                "Pass skip_first=False / skip_last=False, or write explicit rules."
            )
        return cls([(layer.name, spec) for layer in chosen]).resolve(model)

    @classmethod
    def for_target(cls, model, speedup=None, latency_ms=None, **options):
        """Per-group filter counts chosen for a speed target on an engine.

        Measures per-layer latency on `engine` (cached) and per-group
        sensitivity on `data`, and returns the `TargetPlan` whose predicted
        latency meets the target at the least predicted loss; see
        `keras_admm.targeting.plan_for_target` for every option.

        Example:

            plan = PruningPlan.for_target(model, speedup=1.5,
                                          engine="onnxruntime", batch_size=32,
                                          data=(x_val, y_val))
            plan.predicted_latency_ms
        """
        # keras_admm.targeting (above the plan: it times models) registers
        # itself on import; `import keras_admm` imports it.
        if _TARGET_PLANNER is None:
            raise ImportError(
                "PruningPlan.for_target needs keras_admm.targeting, which is not "
                "imported (KERAS_ADMM_LAZY=1?). Run `import keras_admm.targeting` "
                "first, or call keras_admm.targeting.plan_for_target directly."
            )
        return _TARGET_PLANNER(model, speedup=speedup, latency_ms=latency_ms, **options)

    def add(self, key, sparsity) -> PruningPlan:
        """Append a rule (it loses to earlier rules). Returns self."""
        self.rules.append((*_rule_key(key), _optional_sparsity(sparsity)))
        self.targets = None
        return self

    # --------------------------------------------------------------- resolving
    def _match(self, layer):
        for kind, text, spec in self.rules:
            if kind == "name" and layer.name == text:
                return True, spec
            if kind == "glob" and fnmatch.fnmatchcase(layer.name, text):
                return True, spec
            if kind == "class" and any(c.__name__ == text for c in type(layer).__mro__):
                return True, spec
        return False, None

    def resolve(self, model) -> PruningPlan:
        """Check the rules against `model`; return a plan with its targets.

        Raises:
            ValueError: a rule names a layer that is missing or has no kernel, a
                rule matches nothing, the model is not built, or a sparsity
                means nothing for the kernel it matched. Nothing is changed.
        """
        if not model.built:
            raise ValueError(
                f"Model '{model.name}' is not built. Give it an Input shape or call "
                "it on a batch before resolving a pruning plan."
            )
        layers = all_layers(model)
        prunable = prunable_layers(model)
        prunable_names = ", ".join(layer.name for layer in prunable) or "(none)"
        for kind, text, _ in self.rules:
            if kind == "name":
                named = [layer for layer in layers if layer.name == text]
                if not named:
                    raise ValueError(
                        f"The plan names layer '{text}', which is not in model "
                        f"'{model.name}'. Prunable layers: {prunable_names}."
                    )
                if not registry.kernel_spec(named[0]):
                    raise ValueError(
                        f"The plan names layer '{text}' ({type(named[0]).__name__}), "
                        f"which has no prunable kernel. Prunable layers: "
                        f"{prunable_names}."
                    )
            elif kind == "glob":
                if not any(fnmatch.fnmatchcase(layer.name, text) for layer in prunable):
                    raise ValueError(
                        f"The plan's pattern '{text}' matches no prunable layer of "
                        f"model '{model.name}'. Prunable layers: {prunable_names}."
                    )
            elif not any(
                any(c.__name__ == text for c in type(layer).__mro__)
                for layer in prunable
            ):
                raise ValueError(
                    f"The plan's class rule '{text}' matches no prunable layer of "
                    f"model '{model.name}'. Prunable layers: {prunable_names}."
                )
        targets = []
        for layer in prunable:
            matched, spec = self._match(layer)
            if not matched or spec is None:
                continue
            kernel_spec = registry.kernel_spec(layer)
            variable = registry.kernel_variable(layer)
            spec.check_kernel(tuple(variable.shape), kernel_spec.layout, layer.name)
            _check_nm_reduces(spec, kernel_spec.layout, variable, layer.name)
            targets.append(
                LayerTarget(
                    layer_name=layer.name,
                    layer_class=type(layer).__name__,
                    weight_path=variable.path,
                    kernel_shape=tuple(variable.shape),
                    layout=kernel_spec.layout,
                    sparsity=spec,
                )
            )
        names = [t.layer_name for t in targets]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(
                    f"Model '{model.name}' has two planned layers named '{name}' "
                    "(one inside a nested model): after a save and load Keras gives "
                    "their weights the same path, and masks or ADMM state could bind "
                    "to the wrong one. Give them unique names, e.g. "
                    "keras.layers.Conv2D(..., name='inner_conv')."
                )
        if not targets:
            raise ValueError(
                f"The plan prunes no layer of model '{model.name}' (every match is "
                f"excluded). Prunable layers: {prunable_names}."
            )
        return PruningPlan(self._rule_pairs(), targets=targets)

    @property
    def resolved(self) -> bool:
        return self.targets is not None

    @property
    def layer_names(self) -> list[str]:
        return [t.layer_name for t in self._require_targets("layer_names")]

    def target_for_path(self, weight_path):
        for target in self._require_targets("target_for_path"):
            if target.weight_path == weight_path:
                return target
        return None

    def _require_targets(self, what):
        if self.targets is None:
            raise ValueError(
                f"{what} needs a resolved plan. Call plan.resolve(model) first, or "
                "build it with PruningPlan.uniform(model, ...)."
            )
        return self.targets

    def map_sparsity(self, fn) -> PruningPlan:
        """A plan whose every sparsity is `fn(sparsity)`, still resolved if this is.

        Derived plans (the stages of progressive ADMM, gradual pruning's
        schedule) come from here: targets keep their layer, kernel and layout,
        so nothing is resolved again and nothing goes through text. Excluding
        rules (None) stay excluding.

        Raises:
            ValueError: a new sparsity does not fit its kernel.

        Example:

            half = plan.map_sparsity(lambda s: type(s)(s.ratio / 2))
        """
        rules = [
            (key, None if spec is None else fn(spec))
            for key, spec in self._rule_pairs()
        ]
        targets = None
        if self.targets is not None:
            targets = []
            for target in self.targets:
                spec = fn(target.sparsity)
                spec.check_kernel(target.kernel_shape, target.layout, target.layer_name)
                targets.append(dataclasses.replace(target, sparsity=spec))
        return PruningPlan(rules, targets=targets)

    # ----------------------------------------------------------- serialization
    def _rule_pairs(self):
        pairs = []
        for kind, text, spec in self.rules:
            key = text if kind != "class" else _ClassName(text)
            pairs.append((key, spec))
        return pairs

    def to_dict(self) -> dict:
        rules = [
            {kind: text, "sparsity": None if spec is None else str(spec)}
            for kind, text, spec in self.rules
        ]
        data = {"rules": rules}
        if self.targets is not None:
            data["targets"] = [t.to_dict() for t in self.targets]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PruningPlan:
        if (
            not isinstance(data, dict)
            or "rules" not in data
            or not isinstance(data["rules"], list)
        ):
            raise ValueError(
                "A plan's JSON must be an object with a 'rules' list, e.g. "
                '{"rules": [{"glob": "conv*", "sparsity": "filter:0.5"}]}; got '
                f"{str(data)[:80]}."
            )
        plan = cls()
        for rule in data["rules"]:
            kinds = [k for k in ("name", "glob", "class") if k in rule]
            if len(kinds) != 1 or "sparsity" not in rule:
                raise ValueError(
                    f"Plan rule {rule!r} needs exactly one of 'name', 'glob' or "
                    "'class', and a 'sparsity' (text form or null)."
                )
            spec = _optional_sparsity(rule["sparsity"])
            plan.rules.append((kinds[0], rule[kinds[0]], spec))
        if data.get("targets") is not None:
            plan.targets = [LayerTarget.from_dict(t) for t in data["targets"]]
        return plan

    def to_json(self, path=None, indent=2) -> str:
        """The plan as JSON text; also written to `path` when given."""
        return dump_json(self.to_dict(), path, indent)

    @classmethod
    def from_json(cls, text_or_path: str) -> PruningPlan:
        """A plan from JSON text or from a JSON file path (for a --plan flag)."""
        text = text_or_path
        if not text_or_path.lstrip().startswith("{"):
            if not os.path.exists(text_or_path):
                raise FileNotFoundError(
                    f"Plan file '{text_or_path}' does not exist. Pass a JSON file "
                    "written by PruningPlan.to_json(path), or the JSON text itself."
                )
            with open(text_or_path) as f:
                text = f.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"The plan is not valid JSON ({e}).") from None
        return cls.from_dict(data)

    @classmethod
    def parse(cls, text: str) -> PruningPlan:
        """A plan from a flag value: JSON text, a JSON file, or "key=sparsity,...".

        In the short form a key is a layer name or glob; "class:Conv2D" is a class
        rule and "none" excludes, e.g. "conv1=filter:0.5,fc*=unstructured:0.9".

        Raises:
            ValueError: the text is neither JSON, a file, nor key=sparsity pairs.
        """
        stripped = text.strip()
        if stripped.startswith("{") or os.path.exists(stripped):
            return cls.from_json(stripped)
        plan = cls()
        for item in filter(None, (part.strip() for part in stripped.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ValueError(
                    f"Cannot read plan item {item!r} in {text!r}: write "
                    "'layer=sparsity' pairs separated by commas, e.g. "
                    "'conv1=filter:0.5,fc*=unstructured:0.9', or pass a JSON file."
                )
            key, value = key.strip(), value.strip()
            if key.startswith("class:"):
                key = _ClassName(key[len("class:") :])
            plan.add(key, None if value.lower() == "none" else value)
        if not plan.rules:
            raise ValueError(f"The plan {text!r} has no rules.")
        return plan

    def get_config(self) -> dict:
        return self.to_dict()

    @classmethod
    def from_config(cls, config) -> PruningPlan:
        return cls.from_dict(config)

    def __eq__(self, other):
        return isinstance(other, PruningPlan) and self.to_dict() == other.to_dict()

    def __repr__(self):
        body = ", ".join(f"{kind}={text!r}: {spec}" for kind, text, spec in self.rules)
        state = f", {len(self.targets)} targets" if self.targets is not None else ""
        return f"PruningPlan([{body}]{state})"


def _as_resolved_plan(model, plan) -> PruningPlan:
    plan = as_plan(plan, "keras_admm")
    return plan if plan.resolved else plan.resolve(model)


def planned_kernels(model, plan) -> list:
    """The (LayerTarget, kernel variable) pairs of `plan` in `model`, checked.

    Resolves the plan against `model` when it is not resolved yet, then checks
    that every target's kernel exists in `model` with the planned shape and that
    its sparsity fits that kernel. Nothing is modified.

    Args:
        model: a built Keras model.
        plan: a PruningPlan (resolved or not) or a dict of rules.

    Returns:
        A list of (LayerTarget, keras.Variable) pairs in plan order.

    Raises:
        TypeError: `plan` is not a PruningPlan or a dict.
        ValueError: the plan does not fit the model (see `PruningPlan.resolve`),
            or a resolved plan names a kernel that is missing or has another
            shape in this model.
    """
    resolved = _as_resolved_plan(model, plan)
    variables = model.weights
    pairs = []
    for target in resolved.targets:
        variable = find_variable(variables, target.weight_path)
        if variable is None:
            raise ValueError(
                f"The plan prunes layer '{target.layer_name}' through variable "
                f"'{target.weight_path}', which is not in model '{model.name}'. "
                "The plan was resolved against another model: call "
                "plan.resolve(model) on this model, or pass the unresolved plan."
            )
        if tuple(variable.shape) != tuple(target.kernel_shape):
            raise ValueError(
                f"The plan expects the kernel of layer '{target.layer_name}' to have "
                f"shape {tuple(target.kernel_shape)}, but '{target.weight_path}' in "
                f"model '{model.name}' has shape {tuple(variable.shape)}. Resolve "
                "the plan against this model with plan.resolve(model)."
            )
        target.sparsity.check_kernel(
            tuple(variable.shape), target.layout, target.layer_name
        )
        pairs.append((target, variable))
    return pairs
