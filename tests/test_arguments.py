"""The shared argument checks: what they accept, refuse, and say."""

import math

import numpy as np
import pytest

from keras_admm.arguments import check_count, check_number


@pytest.mark.parametrize("value", [3, 2.5, np.float32(0.5), np.int64(7)])
def test_check_number_returns_a_float(value):
    result = check_number("Owner", "x", value, "Fix.", above=0)
    assert type(result) is float and result == float(value)


@pytest.mark.parametrize(
    "value, kwargs, error, message",
    [
        (
            "3",
            {},
            TypeError,
            r"Owner `x` must be a finite number, got '3' \(str\)\. Fix\.",
        ),
        (True, {}, TypeError, r"got True \(bool\)"),
        (None, {}, TypeError, r"got None \(NoneType\)"),
        (math.nan, {}, ValueError, r"must be a finite number, got nan\. Fix\."),
        (math.inf, {}, ValueError, r"must be a finite number, got inf"),
        (math.nan, {"allow_inf": True}, ValueError, r"must be a number, got nan"),
        (0, {"above": 0}, ValueError, r"must be a finite number > 0, got 0\. Fix\."),
        (0.5, {"at_least": 1}, ValueError, r"must be a finite number >= 1, got 0\.5"),
        (
            -math.inf,
            {"above": 0, "allow_inf": True},
            ValueError,
            r"a number > 0, got -inf",
        ),
    ],
)
def test_check_number_refuses_with_the_owner_value_and_fix(
    value, kwargs, error, message
):
    with pytest.raises(error, match=message):
        check_number("Owner", "x", value, "Fix.", **kwargs)


def test_check_number_allows_inf_only_when_asked():
    assert check_number("Owner", "cap", math.inf, "Fix.", allow_inf=True) == math.inf
    assert check_number("Owner", "x", 1.5, "Fix.", above=1) == 1.5
    assert check_number("Owner", "x", 1, "Fix.", at_least=1) == 1.0


@pytest.mark.parametrize(
    "value, error, message",
    [
        (2.0, TypeError, r"Owner `n` must be an int, got 2\.0 \(float\)\. Fix\."),
        (True, TypeError, r"got True \(bool\)"),
        ("4", TypeError, r"got '4' \(str\)"),
        (0, ValueError, r"Owner `n` must be >= 1, got 0\. Fix\."),
    ],
)
def test_check_count_refuses_with_the_owner_value_and_fix(value, error, message):
    with pytest.raises(error, match=message):
        check_count("Owner", "n", value, "Fix.")


def test_check_count_returns_an_int_and_honours_the_minimum():
    assert check_count("Owner", "n", np.int32(3), "Fix.") == 3
    assert type(check_count("Owner", "n", np.int32(3), "Fix.")) is int
    assert check_count("Owner", "n", 0, "Fix.", minimum=0) == 0
    with pytest.raises(ValueError, match=">= 2, got 1"):
        check_count("Owner", "n", 1, "Fix.", minimum=2)
