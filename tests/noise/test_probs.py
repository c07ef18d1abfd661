"""Out-of-sample probabilities: every member model copes with classes smaller than the folds."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dataforge.noise.probs import (
    TABULAR_MEMBERS,
    TEXT_MEMBERS,
    _fit_predict,
    cross_val_probs,
    tabular_features,
    text_features,
)

from ..conftest import SAMPLE, read_jsonl_gz

WINE = SAMPLE / "labels" / "wine.csv"


def _news_with_tiny_classes() -> tuple[list[str], np.ndarray]:
    """150 posts of 3 newsgroups (labels 0-2), then a class of 1 post (3) and a class of 2 (4)."""
    rows = read_jsonl_gz(SAMPLE / "labels" / "20news.jsonl.gz")
    names = sorted({r["label"] for r in rows})[:3]
    picked = [r for r in rows if r["label"] in names][:150]
    texts = [r["text"] for r in picked] + [rows[-1]["text"], rows[-2]["text"], rows[-3]["text"]]
    y = np.array([names.index(r["label"]) for r in picked] + [3, 4, 4])
    return texts, y


def _wine_with_tiny_classes() -> tuple[np.ndarray, np.ndarray]:
    frame = pl.read_csv(WINE)
    cols = [c for c in frame.columns if c not in ("id", "cultivar")]
    X, _, _ = tabular_features(frame, cols, [])
    names = sorted(frame["cultivar"].unique().to_list())
    y = np.array([names.index(v) for v in frame["cultivar"].to_list()])
    y[[0]] = 3  # a class of 1 row
    y[[60, 61]] = 4  # a class of 2 rows
    return X, y


def _check(probs: np.ndarray, y: np.ndarray, *, n_classes: int) -> None:
    assert probs.shape == (len(y), n_classes)
    assert np.isfinite(probs).all() and (probs >= 0).all()
    assert np.allclose(probs.sum(axis=1), 1.0)
    big = y < 3  # the model still learnt the classes it could
    assert (probs[big].argmax(axis=1) == y[big]).mean() > 0.7


@pytest.mark.parametrize("member", TEXT_MEMBERS)
def test_text_members_cope_with_classes_smaller_than_the_folds(member):
    # the svm's calibrator (3 inner folds) used to raise "Requesting 3-fold cross-validation but
    # provided less than 3 examples for at least one class"
    texts, y = _news_with_tiny_classes()
    X, _ = text_features(texts, members=(member,))
    res = cross_val_probs(X, y, n_classes=5, folds=5, seed=0)
    _check(res.pred_probs, y, n_classes=5)


@pytest.mark.parametrize("member", TABULAR_MEMBERS)
def test_tabular_members_cope_with_classes_smaller_than_the_folds(member):
    X, y = _wine_with_tiny_classes()
    res = cross_val_probs({member: X}, y, n_classes=5, folds=5, seed=0)
    _check(res.pred_probs, y, n_classes=5)


def test_svm_calibrates_with_as_many_inner_folds_as_its_smallest_class():
    texts, y = _news_with_tiny_classes()
    X, _ = text_features(texts, members=("svm",))
    X = X["svm"]
    two = y != 3  # classes of 50, 50, 50 and 2 rows: 2 inner folds
    (p,) = _fit_predict("svm", X[two], y[two], [X[:5]], seed=0, n_classes=5, categorical=None)
    assert p.shape == (5, 5) and np.allclose(p.sum(axis=1), 1.0)
    assert (p[:, 3] == 0).all()  # a class absent from training gets probability 0
    # a class of 1 row cannot be calibrated: left out of the svm's training, probability 0
    (p,) = _fit_predict("svm", X, y, [X[-3:]], seed=0, n_classes=5, categorical=None)
    assert (p[:, 3] == 0).all() and (p[:, 4] > 0).any()


def test_training_rows_of_a_single_class_predict_their_class():
    texts, y = _news_with_tiny_classes()
    X, _ = text_features(texts, members=("tfidf-logreg",))
    for member in ("tfidf-logreg", "svm"):
        (p,) = _fit_predict(
            member,
            X["tfidf-logreg"][:3],
            np.array([2, 2, 2]),
            [X["tfidf-logreg"][:4]],
            seed=0,
            n_classes=5,
            categorical=None,
        )
        assert np.array_equal(p, np.tile([0, 0, 1.0, 0, 0], (4, 1)))


def test_extra_rows_are_predicted_without_changing_the_others():
    texts, y = _news_with_tiny_classes()
    big = y < 3
    X, X_extra = text_features(
        [t for t, b in zip(texts, big, strict=True) if b], members=TEXT_MEMBERS, extra=texts[-3:]
    )
    plain = cross_val_probs(X, y[big], n_classes=3, folds=5, seed=0)
    with_extra = cross_val_probs(X, y[big], n_classes=3, folds=5, seed=0, extra=X_extra)
    assert plain.extra is None
    assert np.array_equal(plain.pred_probs, with_extra.pred_probs)
    assert with_extra.extra is not None and with_extra.extra.shape == (3, 3)
    assert np.allclose(with_extra.extra.sum(axis=1), 1.0)


def test_tabular_extra_rows_use_the_codes_of_the_fitted_rows():
    frame = pl.DataFrame({"colour": ["red", "blue", "red", None], "size": [1.0, 2.0, None, 4.0]})
    extra = pl.DataFrame({"colour": ["blue", "green", None], "size": [5.0, None, 6.0]})
    X, mask, X_extra = tabular_features(frame, ["colour", "size"], ["colour"], extra=extra)
    assert mask.tolist() == [True, False]
    assert np.array_equal(X, np.array([[1, 1], [0, 2], [1, np.nan], [np.nan, 4]]), equal_nan=True)
    # 'green' is not among the fitted rows' categories: missing, not a new code
    assert np.array_equal(X_extra, np.array([[0, 5], [np.nan, np.nan], [np.nan, 6]]), equal_nan=True)
