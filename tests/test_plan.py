"""PruningPlan: rule matching, uniform(), JSON round trips and errors."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import (
    DEPTHWISE,
    STANDARD,
    TRANSPOSED,
    assert_weights_equal,
    build_lenet_like,
    weights_snapshot,
)

from keras_admm import LayerTarget, PruningPlan, sparsity
from keras_admm.plan import prunable_layers

LENET_PRUNABLE = ["conv1", "conv2", "fc1", "fc2"]


def targets_by_name(plan):
    return {t.layer_name: t for t in plan.targets}


@keras.saving.register_keras_serializable(package="keras_admm_tests")
class MyConv(keras.layers.Conv2D):
    """A user subclass of a registered layer class."""


def model_with_subclass():
    return keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.Conv2D(8, 3, name="plain"),
            MyConv(8, 3, name="custom"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, name="head"),
        ],
        name="with_subclass",
    )


# --------------------------------------------------------------- matching
def test_rule_by_name(lenet_model):
    plan = PruningPlan({"conv2": "filter:0.5"}).resolve(lenet_model)
    assert plan.resolved and plan.layer_names == ["conv2"]
    (target,) = plan.targets
    kernel = lenet_model.get_layer("conv2").kernel
    assert target == LayerTarget(
        layer_name="conv2",
        layer_class="Conv2D",
        weight_path=kernel.path,
        kernel_shape=tuple(kernel.shape),
        layout=STANDARD,
        sparsity=sparsity.Filter(0.5),
    )
    assert plan.target_for_path(kernel.path) is target
    assert plan.target_for_path("nope/kernel") is None


def test_rule_by_glob(lenet_model):
    plan = PruningPlan({"fc*": "channel:0.25"}).resolve(lenet_model)
    assert plan.layer_names == ["fc1", "fc2"]
    assert all(t.sparsity == sparsity.Channel(0.25) for t in plan.targets)
    plan = PruningPlan({"conv[2]": "shape:0.5"}).resolve(lenet_model)
    assert plan.layer_names == ["conv2"]


def test_rule_by_class(lenet_model):
    plan = PruningPlan({keras.layers.Conv2D: "filter:0.5"}).resolve(lenet_model)
    assert plan.layer_names == ["conv1", "conv2"]
    plan = PruningPlan({keras.layers.Dense: sparsity.NM(2, 4)}).resolve(lenet_model)
    assert plan.layer_names == ["fc1", "fc2"]


def test_class_rule_matches_subclasses():
    model = model_with_subclass()
    plan = PruningPlan({keras.layers.Conv2D: "filter:0.5"}).resolve(model)
    assert plan.layer_names == ["plain", "custom"]
    assert targets_by_name(plan)["custom"].layer_class == "MyConv"
    # A rule for the subclass does not match its base class.
    plan = PruningPlan({MyConv: "filter:0.5"}).resolve(model)
    assert plan.layer_names == ["custom"]


def test_none_excludes_and_first_rule_wins(lenet_model):
    plan = PruningPlan(
        [("conv2", None), ("conv*", "filter:0.5"), ("fc1", "channel:0.5")]
    ).resolve(lenet_model)
    assert plan.layer_names == ["conv1", "fc1"]
    plan = PruningPlan(
        [("conv*", "filter:0.5"), ("conv2", "channel:0.5"), ("*", "shape:0.3")]
    ).resolve(lenet_model)
    specs = {t.layer_name: t.sparsity for t in plan.targets}
    assert specs == {
        "conv1": sparsity.Filter(0.5),
        "conv2": sparsity.Filter(0.5),
        "fc1": sparsity.Shape(0.3),
        "fc2": sparsity.Shape(0.3),
    }
    # The dict form keeps insertion order too.
    plan = PruningPlan({keras.layers.Dense: None, "*": "filter:0.5"})
    assert plan.resolve(lenet_model).layer_names == ["conv1", "conv2"]


def test_add_appends_a_losing_rule_and_unresolves(lenet_model):
    plan = PruningPlan({"conv2": "filter:0.5"}).resolve(lenet_model)
    assert plan.add("conv*", "channel:0.5") is plan
    assert not plan.resolved
    with pytest.raises(ValueError, match="resolve"):
        plan.layer_names  # noqa: B018
    resolved = plan.resolve(lenet_model)
    specs = {t.layer_name: t.sparsity for t in resolved.targets}
    assert specs == {"conv2": sparsity.Filter(0.5), "conv1": sparsity.Channel(0.5)}


def test_unresolved_plan_refuses_target_queries():
    plan = PruningPlan({"conv2": "filter:0.5"})
    assert not plan.resolved
    with pytest.raises(ValueError, match="resolve"):
        plan.target_for_path("conv2/kernel")


def test_every_layout_resolves(multi_conv_model):
    plan = PruningPlan({"*": "unstructured:0.5"}).resolve(multi_conv_model)
    targets = targets_by_name(plan)
    assert sorted(targets) == sorted(
        [
            "conv1d",
            "conv2d",
            "depthwise",
            "separable",
            "conv2d_transpose",
            "conv3d",
            "dense1",
            "dense2",
        ]
    )
    assert targets["conv2d_transpose"].layout == TRANSPOSED
    assert targets["depthwise"].layout == DEPTHWISE
    assert targets["conv3d"].layout == STANDARD
    assert targets["depthwise"].weight_path == "depthwise/kernel"
    assert targets["separable"].weight_path == "separable/pointwise_kernel"
    paths = {v.path: tuple(v.shape) for v in multi_conv_model.weights}
    for target in plan.targets:
        assert paths[target.weight_path] == target.kernel_shape
    # N:M resolves on every layout but the depthwise one (refused, see below).
    nm = PruningPlan({"depthwise": None, "*": "nm:2:4"}).resolve(multi_conv_model)
    assert sorted(targets_by_name(nm)) == sorted(set(targets) - {"depthwise"})


def nested_lenet(lenet_model):
    inputs = keras.Input((12, 12, 1))
    outputs = keras.layers.Dense(3, name="outer_head")(lenet_model(inputs))
    return keras.Model(inputs, outputs, name="outer")


def test_nested_model_layers_are_prunable(lenet_model):
    outer = nested_lenet(lenet_model)
    names = {layer.name for layer in prunable_layers(outer)}
    assert names == set(LENET_PRUNABLE + ["outer_head"])
    plan = PruningPlan({"conv2": "filter:0.5"}).resolve(outer)
    assert plan.targets[0].weight_path == lenet_model.get_layer("conv2").kernel.path


# Regression: Keras' private _flatten_layers() reverses the layers of a nested
# model, which once made uniform(skip_first=True) prune the real first layer.
def test_prunable_layers_keep_model_order_when_nested(lenet_model):
    outer = nested_lenet(lenet_model)
    names = [layer.name for layer in prunable_layers(outer)]
    assert names == LENET_PRUNABLE + ["outer_head"]


def test_uniform_skips_the_real_first_layer_when_nested(lenet_model):
    """Regression (see above): the consequence for PruningPlan.uniform."""
    plan = PruningPlan.uniform(nested_lenet(lenet_model), "filter:0.5")
    assert plan.layer_names == ["conv2", "fc1", "fc2"]


# ---------------------------------------------------------------- uniform
@pytest.mark.parametrize(
    "skip_first, skip_last, expected",
    [
        (True, True, ["conv2", "fc1"]),
        (False, True, ["conv1", "conv2", "fc1"]),
        (True, False, ["conv2", "fc1", "fc2"]),
        (False, False, LENET_PRUNABLE),
    ],
)
def test_uniform_skips(lenet_model, skip_first, skip_last, expected):
    plan = PruningPlan.uniform(
        lenet_model, "filter:0.5", skip_first=skip_first, skip_last=skip_last
    )
    assert plan.resolved and plan.layer_names == expected
    assert all(t.sparsity == sparsity.Filter(0.5) for t in plan.targets)


def test_uniform_layer_types(lenet_model):
    plan = PruningPlan.uniform(
        lenet_model,
        sparsity.Channel(0.5),
        skip_first=False,
        skip_last=False,
        layer_types=(keras.layers.Conv2D,),
    )
    assert plan.layer_names == ["conv1", "conv2"]


def test_uniform_with_nothing_left_raises(lenet_model):
    with pytest.raises(ValueError, match="no layer to prune.*skip_first=False"):
        PruningPlan.uniform(
            lenet_model, "filter:0.5", layer_types=(keras.layers.Conv2D,)
        )


def test_uniform_rejects_meaningless_sparsity(lenet_model):
    with pytest.raises(ValueError, match="conv1"):
        PruningPlan.uniform(lenet_model, "nm:2:4", skip_first=False)
    plan = PruningPlan.uniform(lenet_model, "nm:2:4")
    assert plan.layer_names == ["conv2", "fc1"]


# ------------------------------------------------------------------- JSON
def mixed_plan():
    return PruningPlan(
        [
            ("conv1", None),
            (keras.layers.Conv2D, "filter_shape:0.5:0.25"),
            ("fc*", "channel:0.5"),
            ("fc2", "nm:2:4"),
        ]
    )


def test_json_round_trip_unresolved(lenet_model):
    plan = mixed_plan()
    text = plan.to_json()
    data = json.loads(text)
    assert data["rules"][1] == {"class": "Conv2D", "sparsity": "filter_shape:0.5:0.25"}
    assert data["rules"][0] == {"name": "conv1", "sparsity": None}
    assert "targets" not in data
    again = PruningPlan.from_json(text)
    assert again == plan and not again.resolved
    assert again.resolve(lenet_model).targets == plan.resolve(lenet_model).targets


def test_json_round_trip_resolved_through_a_file(lenet_model, tmp_path):
    plan = mixed_plan().resolve(lenet_model)
    assert plan.layer_names == ["conv2", "fc1", "fc2"]
    path = tmp_path / "plan.json"
    text = plan.to_json(str(path))
    assert path.read_text().strip() == text
    again = PruningPlan.from_json(str(path))
    assert again == plan
    assert again.targets == plan.targets
    # A loaded class rule still matches subclasses and re-resolves the same.
    assert again.resolve(lenet_model).targets == plan.targets
    assert PruningPlan.from_config(plan.get_config()) == plan


def test_json_class_rule_matches_subclass_after_round_trip():
    model = model_with_subclass()
    plan = PruningPlan({keras.layers.Conv2D: "filter:0.5"})
    again = PruningPlan.from_json(plan.to_json())
    assert again.resolve(model).layer_names == ["plain", "custom"]


def test_from_json_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        PruningPlan.from_json(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="not valid JSON"):
        PruningPlan.from_json("{rules: oops}")
    with pytest.raises(ValueError, match="'rules'"):
        PruningPlan.from_json('{"layers": []}')
    with pytest.raises(ValueError, match="exactly one of"):
        PruningPlan.from_json(
            '{"rules": [{"name": "a", "glob": "b*", "sparsity": null}]}'
        )
    with pytest.raises(ValueError, match="bogus"):
        PruningPlan.from_json('{"rules": [{"name": "a", "sparsity": "bogus:1"}]}')


# ----------------------------------------------------------------- errors
def test_missing_layer_names_it_and_lists_prunable(lenet_model):
    with pytest.raises(ValueError) as info:
        PruningPlan({"conv9": "filter:0.5"}).resolve(lenet_model)
    message = str(info.value)
    assert "conv9" in message and "lenet_like" in message
    assert "conv1, conv2, fc1, fc2" in message


@pytest.mark.parametrize("name", ["pool1", "flatten"])
def test_layer_without_kernel(lenet_model, name):
    with pytest.raises(ValueError, match=f"'{name}'.*no prunable kernel.*conv1"):
        PruningPlan({name: "filter:0.5"}).resolve(lenet_model)


def test_glob_matching_nothing(lenet_model):
    with pytest.raises(ValueError, match=r"'dense\*' matches no prunable layer"):
        PruningPlan({"dense*": "filter:0.5"}).resolve(lenet_model)
    # Matching only layers without a kernel counts as matching nothing.
    with pytest.raises(ValueError, match=r"'pool\*'"):
        PruningPlan({"pool*": "filter:0.5"}).resolve(lenet_model)


def test_class_rule_matching_nothing(lenet_model):
    with pytest.raises(ValueError, match="Conv3D"):
        PruningPlan({keras.layers.Conv3D: "filter:0.5"}).resolve(lenet_model)


def test_meaningless_sparsity_names_the_layer(lenet_model):
    with pytest.raises(ValueError, match=r"layer 'conv1'.*1 input channels"):
        PruningPlan({"conv*": "nm:2:4"}).resolve(lenet_model)


def test_everything_excluded_raises(lenet_model):
    with pytest.raises(ValueError, match="prunes no layer"):
        PruningPlan({"*": None}).resolve(lenet_model)


def test_unbuilt_model_raises():
    model = keras.Sequential(
        [keras.layers.Conv2D(4, 3, name="c"), keras.layers.Dense(2, name="d")],
        name="unbuilt",
    )
    with pytest.raises(ValueError, match="'unbuilt' is not built"):
        PruningPlan({"c": "filter:0.5"}).resolve(model)


@pytest.mark.parametrize(
    "key, message",
    [
        (3, "rule key must be a layer name"),
        (int, "class must be a keras.Layer"),
        ("", "rule key must be a layer name"),
    ],
)
def test_bad_rule_keys(key, message):
    with pytest.raises(TypeError, match=message):
        PruningPlan({key: "filter:0.5"})


def test_bad_rules():
    with pytest.raises(TypeError, match="pair"):
        PruningPlan([("conv1", "filter:0.5", "extra")])
    with pytest.raises(ValueError, match="bogus"):
        PruningPlan({"conv1": "bogus:0.5"})
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        PruningPlan({"conv1": "filter:1.0"})


def test_resolve_never_mutates_the_model():
    model = build_lenet_like()
    before = weights_snapshot(model)
    rules = mixed_plan()
    rules_before = rules.to_dict()
    rules.resolve(model)
    PruningPlan.uniform(model, "filter_shape:0.5:0.5", skip_first=False)
    for bad in ({"conv9": "filter:0.5"}, {"conv*": "nm:2:4"}, {"pool1": "filter:0.5"}):
        with pytest.raises(ValueError):
            PruningPlan(bad).resolve(model)
    assert_weights_equal(model, before)
    assert rules.to_dict() == rules_before and not rules.resolved


# ---------------------------------------------------------- parse (flags)
def test_parse_short_form_equals_explicit_rules(lenet_model):
    plan = PruningPlan.parse(
        " conv1=filter:0.5, class:Dense=none ,fc*=unstructured:0.9,conv2=NONE"
    )
    assert plan == PruningPlan(
        [
            ("conv1", "filter:0.5"),
            (keras.layers.Dense, None),
            ("fc*", "unstructured:0.9"),
            ("conv2", None),
        ]
    )
    assert plan.resolve(lenet_model).layer_names == ["conv1"]


def test_parse_class_rule_matches_subclasses():
    plan = PruningPlan.parse("class:Conv2D=nm:2:4")
    assert plan.resolve(model_with_subclass()).layer_names == ["plain", "custom"]


def test_parse_json_text_and_file(lenet_model, tmp_path):
    plan = mixed_plan()
    assert PruningPlan.parse(plan.to_json()) == plan
    path = tmp_path / "plan.json"
    plan.to_json(str(path))
    assert PruningPlan.parse(f" {path} ") == plan


@pytest.mark.parametrize(
    "text, bad",
    [
        ("conv1", "conv1"),
        ("conv1=", "conv1="),
        ("=filter:0.5", "=filter:0.5"),
        ("a=b=c", "b=c"),
    ],
)
def test_parse_bad_items_name_the_item_and_an_example(text, bad):
    with pytest.raises(ValueError) as info:
        PruningPlan.parse(text)
    message = str(info.value)
    assert bad in message
    assert "conv1=filter:0.5" in message or "Unknown sparsity kind" in message


@pytest.mark.parametrize("text", ["", " , ", "  "])
def test_parse_empty_plan_raises(text):
    with pytest.raises(ValueError, match="no rules"):
        PruningPlan.parse(text)


def test_parse_bad_sparsity_in_short_form():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        PruningPlan.parse("conv1=filter:1.5")


# ------------------------------- same-named layers in a nested model (issue 12)
def _outer_and_inner_conv():
    inner = keras.Sequential(
        [keras.Input((6, 6, 4)), keras.layers.Conv2D(4, 3, name="conv")], name="inner"
    )
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = inner(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def test_same_named_prunable_layers_are_refused_before_any_pruning():
    model = _outer_and_inner_conv()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="two planned layers named .conv..*unique"):
        PruningPlan({"conv": "filter:0.5"}).resolve(model)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_mask_path_shared_by_two_variables_is_refused():
    from keras_admm.plan import find_variable

    model = _outer_and_inner_conv()
    variables = [model.weights[0], model.weights[2]]
    # What a save and load does to their paths: both become 'conv/kernel'.
    fake = [type("V", (), {"path": "conv/kernel"})() for _ in variables]
    with pytest.raises(ValueError, match="2 variables .* 'conv/kernel'.*unique"):
        find_variable(fake, "conv/kernel")


def test_same_named_layers_that_are_not_planned_are_fine():
    model = _outer_and_inner_conv()
    inputs = model.inputs
    # A plan that leaves both 'conv' layers alone resolves (no name clash to fear).
    head = keras.layers.Dense(3, name="head")(model.outputs[0])
    plan = PruningPlan({"head": "filter:0.5"}).resolve(keras.Model(inputs, head))
    assert plan.layer_names == ["head"]


# ------------------------------------------------------------- bad arguments
def test_uniform_needs_a_model_and_takes_one_layer_class():
    with pytest.raises(TypeError, match="needs a built keras.Model, got None"):
        PruningPlan.uniform(None, "filter:0.5")
    with pytest.raises(TypeError, match="load_model"):
        PruningPlan.uniform("model.keras", "filter:0.5")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="c1"),
            keras.layers.Conv2D(4, 3, name="c2"),
            keras.layers.Flatten(),
            keras.layers.Dense(8, name="d1"),
            keras.layers.Dense(2, name="d2"),
        ]
    )
    one = PruningPlan.uniform(
        model,
        "filter:0.5",
        skip_first=False,
        skip_last=False,
        layer_types=keras.layers.Conv2D,
    )
    assert [t.layer_name for t in one.targets] == ["c1", "c2"]
    with pytest.raises(TypeError, match="layer_types must be keras.Layer classes"):
        PruningPlan.uniform(model, "filter:0.5", layer_types=("Conv2D",))


def test_a_resolved_plan_json_without_a_target_field_says_how_to_fix_it():
    text = json.dumps(
        {
            "rules": [{"name": "conv2", "sparsity": "filter:0.5"}],
            "targets": [{"layer_name": "conv2"}],
        }
    )
    with pytest.raises(ValueError, match="'conv2' lacks layer_class, weight_path"):
        PruningPlan.from_json(text)


def test_a_rule_whose_sparsity_is_a_foreign_dict_is_refused():
    with pytest.raises(TypeError, match="is not a serialized Sparsity"):
        sparsity.parse({"foo": 1})
    config = keras.saving.serialize_keras_object(sparsity.Filter(0.5))
    assert sparsity.parse(config) == sparsity.Filter(0.5)


def test_rule_errors_name_the_rule_and_strings_point_to_from_json():
    with pytest.raises(ValueError, match=r"Plan rule 'fc1': .*\[0, 1\)"):
        PruningPlan({"conv1": "filter:0.5", "fc1": "filter:1.0"})
    with pytest.raises(TypeError, match="Plan rule 'conv2': "):
        PruningPlan({"conv2": 0.5})
    with pytest.raises(TypeError, match="For a plan's JSON use PruningPlan.from_json"):
        PruningPlan("conv2=filter:0.5")
    with pytest.raises(ValueError, match="must be an object with a 'rules' list"):
        PruningPlan.from_json('{"rules": {"conv2": "filter:0.5"}}')


def test_nm_on_a_depthwise_conv_is_refused_by_name():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.DepthwiseConv2D(3, name="dw"),
            keras.layers.Conv2D(4, 1, name="pw"),
        ]
    )
    with pytest.raises(ValueError, match="nm:2:4 cannot prune layer 'dw'.*depthwise"):
        PruningPlan({"dw": "nm:2:4"}).resolve(model)
    assert PruningPlan({"pw": "nm:2:4"}).resolve(model).targets[0].layer_name == "pw"
