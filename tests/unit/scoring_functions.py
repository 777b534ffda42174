"""Scoring functions that the function-scorer tests import by path, as a workflow file would."""

from __future__ import annotations

import numpy

from trunkline.evals import Score

NOT_A_FUNCTION = 42


def half(output, expected, row):  # noqa: ANN001, ANN201
    return 0.5


def equal(output, expected, row):  # noqa: ANN001, ANN201
    return output == expected


def numpy_equal(output, expected, row):  # noqa: ANN001, ANN201
    return numpy.array([output]) == numpy.array([expected])


def numpy_equal_scalar(output, expected, row):  # noqa: ANN001, ANN201
    return (numpy.array([output]) == numpy.array([expected])).all()


def explained(output, expected, row):  # noqa: ANN001, ANN201
    return Score(0.25, f"row says {row.get('note')}")


def one(output, expected, row):  # noqa: ANN001, ANN201
    return 1


def too_high(output, expected, row):  # noqa: ANN001, ANN201
    return 1.5


def text(output, expected, row):  # noqa: ANN001, ANN201
    return "0.5"


def nothing(output, expected, row):  # noqa: ANN001, ANN201
    return None


def not_a_number(output, expected, row):  # noqa: ANN001, ANN201
    return float("nan")


async def async_length_match(output, expected, row):  # noqa: ANN001, ANN201
    return len(output) == len(expected)


class Checks:
    @staticmethod
    def always(output, expected, row):  # noqa: ANN001, ANN205
        return True
