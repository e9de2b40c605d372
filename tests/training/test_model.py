"""The shared mood model: its shape, its starting point, its weights as arrays, its predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator

from client_sdk.errors import InvalidArgumentError
from client_sdk.features import FEATURE_DIM
from client_sdk.model import (
    MOOD_OFFSET,
    create_model,
    get_weights,
    mean_absolute_error,
    predict,
    set_weights,
)


def same_weights(first: list[np.ndarray], second: list[np.ndarray]) -> bool:
    return len(first) == len(second) and all(
        np.array_equal(a, b) for a, b in zip(first, second, strict=True)
    )


def random_features(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, FEATURE_DIM)).astype(np.float32)


def test_the_model_maps_each_feature_vector_to_one_mood() -> None:
    model = create_model(seed=0)

    out = model(torch.from_numpy(random_features(5)))

    assert out.shape == (5,)
    assert predict(model, random_features(5)).shape == (5,)
    assert predict(model, random_features(1)[0]).shape == ()


def test_the_model_is_a_small_mlp_from_the_features_to_one_output() -> None:
    shapes = [w.shape for w in get_weights(create_model(seed=0))]

    assert shapes == [(32, FEATURE_DIM), (32,), (1, 32), (1,)]


def test_an_untrained_model_predicts_the_mean_mood_for_any_input() -> None:
    predictions = predict(create_model(seed=3), random_features(50) * 10)

    assert np.all(predictions == np.float32(MOOD_OFFSET))
    assert MOOD_OFFSET == 3.7


def test_the_offset_is_a_constant_not_a_weight() -> None:
    model = create_model(seed=0)

    assert "offset" not in model.state_dict()
    assert all(p.requires_grad for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(w.size for w in get_weights(model))


def test_opacus_accepts_the_model() -> None:
    assert ModuleValidator.validate(create_model(seed=0), strict=False) == []


def test_weights_round_trip_through_numpy_arrays() -> None:
    source = create_model(seed=1)
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(torch.randn_like(parameter))
    target = create_model(seed=2)

    set_weights(target, get_weights(source))

    features = random_features(20)
    assert np.array_equal(predict(target, features), predict(source, features))
    assert all(w.dtype == np.float32 for w in get_weights(target))
    keys = list(source.state_dict())
    assert keys == ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]
    for key, array in zip(keys, get_weights(source), strict=True):
        assert np.array_equal(array, source.state_dict()[key].numpy())


def test_weights_are_copies_that_do_not_alias_the_model() -> None:
    model = create_model(seed=0)
    weights = get_weights(model)

    weights[0][:] = 99.0
    given = [np.zeros_like(w) for w in weights]
    set_weights(model, given)
    given[0][:] = 7.0

    assert float(model.state_dict()["layers.0.weight"].abs().max()) == 0.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ws: ws[:-1], "4 weight arrays, got 3"),
        (lambda ws: [*ws, np.zeros(1)], "4 weight arrays, got 5"),
        (lambda ws: [ws[0].T, *ws[1:]], "has shape"),
        (lambda ws: [ws[0], ws[1], ws[2], np.array([np.nan])], "NaN or infinite"),
    ],
)
def test_wrong_weights_are_refused_and_change_nothing(change, message: str) -> None:  # type: ignore[no-untyped-def]
    model = create_model(seed=0)
    before = get_weights(model)
    wrong = change([w + 1.0 for w in before])

    with pytest.raises(InvalidArgumentError, match=message):
        set_weights(model, wrong)

    assert same_weights(get_weights(model), before)


def test_the_same_seed_gives_the_same_model_and_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)

    first, second = create_model(seed=7), create_model(seed=7)

    assert torch.rand(1) == expected_next
    assert same_weights(get_weights(first), get_weights(second))
    assert not np.array_equal(get_weights(first)[0], get_weights(create_model(seed=8))[0])


@pytest.mark.parametrize(("bias", "expected"), [(10.0, 5.0), (-10.0, 1.0)])
def test_predictions_are_clipped_to_the_mood_scale(bias: float, expected: float) -> None:
    model = create_model(seed=0)
    with torch.no_grad():
        model.layers[-1].bias.fill_(bias)

    assert np.all(predict(model, random_features(4)) == expected)


def test_prediction_leaves_the_model_in_its_mode_and_builds_no_graph() -> None:
    model = create_model(seed=0)
    model.train()

    predict(model, random_features(3))

    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_features_of_the_wrong_width_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="features must have shape"):
        predict(create_model(seed=0), np.zeros((2, FEATURE_DIM + 1)))


def test_the_mean_absolute_error_is_the_mean_distance_to_the_true_moods() -> None:
    y = np.array([1.0, 3.7, 5.0, 4.0], dtype=np.float32)

    error = mean_absolute_error(create_model(seed=0), random_features(4), y)

    assert error == pytest.approx(np.mean(np.abs(3.7 - y)), rel=1e-6)


def test_the_mean_absolute_error_of_no_examples_is_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        mean_absolute_error(create_model(seed=0), np.zeros((0, FEATURE_DIM)), np.zeros(0))
