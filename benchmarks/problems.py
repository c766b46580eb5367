"""The shared problem set lives with the tests (``tests/problems.py``); benchmarks import it
from here."""

from tests.problems import *  # noqa: F403
from tests.problems import Problem, large_problems, logistic_problems, mgh_problems, suite

__all__ = ["Problem", "large_problems", "logistic_problems", "mgh_problems", "suite"]
