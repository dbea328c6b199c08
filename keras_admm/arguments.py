"""Checks of user arguments that several modules share, with one wording.

>>> from keras_admm.arguments import check_number
>>> check_number("GradualPruning", "power", 3, "Use e.g. 3.", above=0)
3.0
"""

import math
import numbers

__all__ = ["check_number", "check_count"]


def check_number(
    owner, name, value, fix, *, above=None, at_least=None, allow_inf=False
) -> float:
    """`value` as a float if it is a real number (finite unless `allow_inf`,
    > `above` and >= `at_least` when given); otherwise a clear error.

    Args:
        owner / name: who asks and for which argument, e.g. "ADMMWrapper", "rho".
        value: what the user passed.
        fix: a sentence that tells the user what to pass instead.
        above: an exclusive lower bound, or None.
        at_least: an inclusive lower bound, or None.
        allow_inf: whether +-inf is accepted (e.g. "no cap").

    Raises:
        TypeError: not a real number (bools and strings included).
        ValueError: NaN, an infinity not allowed, or below a bound.
    """
    want = "a number" if allow_inf else "a finite number"
    if above is not None:
        want += f" > {above}"
    if at_least is not None:
        want += f" >= {at_least}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{owner} `{name}` must be {want}, got {value!r} "
            f"({type(value).__name__}). {fix}"
        )
    if (
        math.isnan(value)
        or (math.isinf(value) and not allow_inf)
        or (above is not None and value <= above)
        or (at_least is not None and value < at_least)
    ):
        raise ValueError(f"{owner} `{name}` must be {want}, got {value!r}. {fix}")
    return float(value)


def check_count(owner, name, value, fix, *, minimum=1) -> int:
    """`value` as an int if it is an integer >= `minimum`; otherwise a clear error.

    Raises:
        TypeError: not an integer (bools, floats and strings included).
        ValueError: below `minimum`.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{owner} `{name}` must be an int, got {value!r} "
            f"({type(value).__name__}). {fix}"
        )
    if value < minimum:
        raise ValueError(f"{owner} `{name}` must be >= {minimum}, got {value}. {fix}")
    return int(value)
