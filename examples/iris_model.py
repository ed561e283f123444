"""A small real model for the examples: scikit-learn's logistic regression on iris (ships with sklearn)."""
from __future__ import annotations

from functools import lru_cache

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@lru_cache(maxsize=1)
def load_model():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    return LogisticRegression(max_iter=500).fit(iris.data, iris.target)


def class_names() -> list:
    from sklearn.datasets import load_iris

    return [str(n) for n in load_iris().target_names]
