"""Out-of-sample predicted probabilities by stratified K-fold cross-validation (scikit-learn).

Features are built once for the whole dataset (they use no labels: TF-IDF vocabularies and IDF
weights, ordinal codes for categorical columns), then each fold fits a fresh classifier on the
other folds and predicts the held-out fold; the held-out predictions are stitched back into one
``[N, K]`` matrix, the input cleanlab needs. Folds are independent tasks run on an executor
(process pool locally, Ray tasks on a cluster); every estimator has a fixed ``random_state``, so
the result does not depend on which executor ran or with how many workers.

Models (``--model``):

- ``tfidf-logreg`` (text): word 1-2-gram TF-IDF (sublinear tf), L2 logistic regression.
- ``hgb`` (tabular): ``HistGradientBoostingClassifier`` (native missing values and categorical columns).
- ``ensemble``: several models whose probabilities are averaged for flagging, and whose label
  quality scores are combined with cleanlab's ensemble scores for ranking. Text: the TF-IDF
  logistic regression, complement naive Bayes and a linear SVM with isotonic calibration, all on
  the same word TF-IDF; tabular: HGB and a standardised logistic regression.
- ``auto``: ``ensemble`` for text, ``hgb`` for tabular.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from dataforge.errors import ConfigError, DataError, choices

log = logging.getLogger(__name__)

MODELS = ("auto", "tfidf-logreg", "hgb", "ensemble")
TEXT_MEMBERS = ("tfidf-logreg", "cnb", "svm")
TABULAR_MEMBERS = ("hgb", "logreg")


@dataclass
class ProbResult:
    """Averaged out-of-sample probabilities and each member model's own."""

    pred_probs: np.ndarray
    members: dict[str, np.ndarray] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    folds: int = 5


def members_for(model: str, *, text: bool) -> tuple[str, ...]:
    """The member models that ``model`` stands for, for text or tabular data."""
    if model not in MODELS:
        msg = f"unknown model {model!r}; valid: {choices(MODELS)}"
        raise ConfigError(msg)
    if text:
        if model == "hgb":
            msg = "model 'hgb' needs feature columns (--feature-cols); for text use tfidf-logreg, ensemble or auto"
            raise ConfigError(msg)
        return ("tfidf-logreg",) if model == "tfidf-logreg" else TEXT_MEMBERS
    if model == "tfidf-logreg":
        msg = "model 'tfidf-logreg' needs a text column (--text-col); for feature columns use hgb, ensemble or auto"
        raise ConfigError(msg)
    return ("hgb",) if model in ("hgb", "auto") else TABULAR_MEMBERS


# --------------------------------------------------------------------------- features


def text_features(texts: list[str], *, members: tuple[str, ...]) -> dict[str, Any]:
    """Label-free sparse features, shared by the text members: word 1-2-gram TF-IDF (sublinear tf).

    Character n-grams were measured too (see benchmarks/results/noise_quality.md): +0.01 F1 at ~10x
    the time on long posts, so they are not used.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    word = TfidfVectorizer(
        sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_df=0.9, max_features=1_000_000, dtype=np.float32
    )
    try:
        xw = word.fit_transform(texts)
    except ValueError:  # every text empty or only stop-words: fall back to single characters
        xw = TfidfVectorizer(analyzer="char", dtype=np.float32).fit_transform(texts)
    return dict.fromkeys(members, xw)


def tabular_features(
    frame: pl.DataFrame, cols: list[str], categorical: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Float matrix (NaN = missing; categorical columns as ordinal codes of the sorted values) and the categorical mask."""
    out = np.empty((frame.height, len(cols)), dtype=np.float64)
    mask = np.zeros(len(cols), dtype=bool)
    for j, c in enumerate(cols):
        s = frame[c]
        if c in categorical:
            mask[j] = True
            values = sorted(v for v in s.unique().to_list() if v is not None)
            if len(values) > 250:
                msg = f"categorical feature {c!r} has {len(values)} distinct values (at most 250 are supported); encode it first"
                raise DataError(msg)
            codes = {v: float(i) for i, v in enumerate(values)}
            out[:, j] = [np.nan if v is None else codes[v] for v in s.to_list()]
        else:
            out[:, j] = s.cast(pl.Float64).fill_null(np.nan).to_numpy()
    return out, mask


# --------------------------------------------------------------------------- models


def make_estimator(member: str, *, seed: int, categorical: np.ndarray | None = None) -> Any:
    """A fresh, unfitted estimator for ``member`` (fixed random_state)."""
    if member == "tfidf-logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=5.0, solver="saga", max_iter=30, tol=1e-3, random_state=seed)
    if member == "cnb":
        from sklearn.naive_bayes import ComplementNB

        return ComplementNB(alpha=0.3)
    if member == "svm":
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import LinearSVC

        return CalibratedClassifierCV(LinearSVC(C=0.5, random_state=seed), cv=3, method="isotonic")
    if member == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        cat = categorical if categorical is not None and categorical.any() else None
        return HistGradientBoostingClassifier(
            random_state=seed, categorical_features=cat, early_stopping=False, max_iter=200
        )
    if member == "logreg":
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(
            SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed)
        )
    msg = f"unknown member model {member!r}; valid: {choices(TEXT_MEMBERS + TABULAR_MEMBERS)}"
    raise ConfigError(msg)


@dataclass(frozen=True)
class FoldJob:
    """One (member, fold) fit: everything a worker needs, picklable."""

    member: str
    fold: int
    seed: int
    n_classes: int


SINGLE_THREAD_ROWS = 20_000


def _fit_fold(
    job: FoldJob,
    *,
    X: Any,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    categorical: Any,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Fit on the other folds (minus ``exclude`` rows), predict the held-out fold: probabilities [len(test), K] and seconds."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    train, test = folds[job.fold]
    if exclude is not None:
        train = train[~exclude[train]]
    est = make_estimator(job.member, seed=job.seed, categorical=categorical)
    # OpenMP threads cost more than they give on small folds (HGB on 178 rows: 20 s with 2 threads,
    # 4 s with 1, identical probabilities); big folds keep every core.
    threads = 1 if len(train) < SINGLE_THREAD_ROWS else None
    with warnings.catch_warnings(), threadpool_limits(limits=threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        est.fit(X[train], y[train])
        proba = est.predict_proba(X[test])
    out = np.zeros((len(test), job.n_classes), dtype=np.float64)
    out[:, np.asarray(est.classes_, dtype=np.int64)] = proba
    return out, time.perf_counter() - t0


def _run_job(job: FoldJob, payload: dict[str, Any]) -> tuple[np.ndarray, float]:
    return _fit_fold(
        job,
        X=payload["X"][job.member],
        y=payload["y"],
        folds=payload["folds"],
        categorical=payload.get("categorical"),
        exclude=payload.get("exclude"),
    )


def stratified_folds(y: np.ndarray, *, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled stratified folds (scikit-learn); classes rarer than ``folds`` are warned about, not an error."""
    import warnings

    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(y).min()) if len(y) else 0
    if smallest < folds:
        log.warning("the smallest class has %d examples, fewer than %d folds", smallest, folds)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return list(skf.split(np.zeros(len(y)), y))


def cross_val_probs(
    X: dict[str, Any],
    y: np.ndarray,
    *,
    n_classes: int,
    folds: int = 5,
    seed: int = 0,
    executor: Any = None,
    categorical: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> ProbResult:
    """Out-of-sample probabilities for every member in ``X`` (member -> feature matrix).

    Args:
        X: feature matrix per member model (see ``text_features``/``tabular_features``).
        y: labels 0..K-1.
        n_classes: K (columns of the result, even if a fold lacks a class).
        folds: number of stratified folds.
        seed: fold shuffling and estimator seed.
        executor: a dataforge executor (``map``); None = in this process.
        categorical: categorical column mask for tabular models.
        exclude: rows never used for training (e.g. the previous round's flags); they are still
            predicted, by models that did not see them.
    """
    split = stratified_folds(y, folds=folds, seed=seed)
    jobs = [FoldJob(member=m, fold=f, seed=seed, n_classes=n_classes) for m in X for f in range(len(split))]
    payload = {"X": X, "y": y, "folds": split, "categorical": categorical, "exclude": exclude}
    fn = functools.partial(_run_job, payload=payload)
    t0 = time.perf_counter()
    results = executor.map(fn, jobs) if executor is not None else [fn(j) for j in jobs]
    members: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for m in X:
        members[m] = np.zeros((len(y), n_classes), dtype=np.float64)
        seconds[m] = 0.0
    for job, (proba, secs) in zip(jobs, results, strict=True):
        members[job.member][split[job.fold][1]] = proba
        seconds[job.member] += secs
    for p in members.values():
        p /= np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
    avg = np.mean(np.stack(list(members.values())), axis=0)
    accuracy = {m: float((p.argmax(axis=1) == y).mean()) for m, p in members.items()}
    log.info(
        "cross-validated %d model(s) x %d folds in %.1f s; accuracy vs given labels: %s",
        len(members),
        len(split),
        time.perf_counter() - t0,
        ", ".join(f"{m} {a:.3f}" for m, a in accuracy.items()),
    )
    return ProbResult(pred_probs=avg, members=members, accuracy=accuracy, seconds=seconds, folds=len(split))
