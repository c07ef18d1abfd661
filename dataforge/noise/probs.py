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

Every model copes with classes smaller than the folds, the svm's inner calibration folds included
(``_fit_predict``); ``noise_report`` still leaves such classes out, as their rows cannot be
predicted out of sample by a model that learnt their class.
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
    """Averaged out-of-sample probabilities and each member model's own; ``extra``: the averaged
    probabilities of the rows predicted but never trained on (None without)."""

    pred_probs: np.ndarray
    members: dict[str, np.ndarray] = field(default_factory=dict)
    extra: np.ndarray | None = None
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


def text_features(
    texts: list[str], *, members: tuple[str, ...], extra: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Label-free sparse features, shared by the text members: word 1-2-gram TF-IDF (sublinear tf).

    The vocabulary and IDF weights are fitted on ``texts`` only; ``extra`` texts (rows that are
    predicted but never trained on) are transformed with them, so they change nothing for ``texts``.
    Character n-grams were measured too (see benchmarks/results/noise_quality.md): +0.01 F1 at ~10x
    the time on long posts, so they are not used.

    Returns:
        The feature matrix of ``texts`` per member, and of ``extra`` per member (None without).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(
        sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_df=0.9, max_features=1_000_000, dtype=np.float32
    )
    try:
        xw = vec.fit_transform(texts)
    except ValueError:  # every text empty or only stop-words: fall back to single characters
        vec = TfidfVectorizer(analyzer="char", dtype=np.float32)
        xw = vec.fit_transform(texts)
    xe = vec.transform(extra) if extra else None
    return dict.fromkeys(members, xw), (dict.fromkeys(members, xe) if xe is not None else None)


def tabular_features(
    frame: pl.DataFrame, cols: list[str], categorical: list[str], *, extra: pl.DataFrame | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Float matrix (NaN = missing; categorical columns as ordinal codes of the sorted values), the
    categorical mask, and the matrix of the ``extra`` rows (None without) coded with the codes of
    ``frame`` (a category absent from ``frame`` is missing)."""
    frames = [frame] if extra is None else [frame, extra]
    outs = [np.empty((f.height, len(cols)), dtype=np.float64) for f in frames]
    mask = np.zeros(len(cols), dtype=bool)
    for j, c in enumerate(cols):
        if c in categorical:
            mask[j] = True
            values = sorted(v for v in frame[c].unique().to_list() if v is not None)
            if len(values) > 250:
                msg = f"categorical feature {c!r} has {len(values)} distinct values (at most 250 are supported); encode it first"
                raise DataError(msg)
            codes = {v: float(i) for i, v in enumerate(values)}
            for f, out in zip(frames, outs, strict=True):
                out[:, j] = [codes.get(v, np.nan) if v is not None else np.nan for v in f[c].to_list()]
        else:
            for f, out in zip(frames, outs, strict=True):
                out[:, j] = f[c].cast(pl.Float64).fill_null(np.nan).to_numpy()
    return outs[0], mask, (outs[1] if extra is not None else None)


# --------------------------------------------------------------------------- models


CALIBRATION_FOLDS = 3  # the svm's isotonic calibration: inner stratified folds


def make_estimator(
    member: str,
    *,
    seed: int,
    categorical: np.ndarray | None = None,
    calibration_folds: int = CALIBRATION_FOLDS,
) -> Any:
    """A fresh, unfitted estimator for ``member`` (fixed random_state).

    ``calibration_folds``: inner cross-validation folds of the svm's calibrator (each class of its
    training rows needs at least that many examples; see ``_fit_predict``).
    """
    if member == "tfidf-logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=5.0, solver="saga", max_iter=30, tol=1e-3, random_state=seed)
    if member == "cnb":
        from sklearn.naive_bayes import ComplementNB

        return ComplementNB(alpha=0.3)
    if member == "svm":
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import LinearSVC

        return CalibratedClassifierCV(
            LinearSVC(C=0.5, random_state=seed), cv=calibration_folds, method="isotonic"
        )
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


def _constant(y: np.ndarray, n_rows: int, n_classes: int) -> np.ndarray:
    """The class frequencies of ``y`` for every row (uniform when ``y`` is empty): the prediction
    of a model that cannot be fitted because its training rows hold fewer than two classes."""
    prior = np.bincount(y, minlength=n_classes).astype(np.float64) if len(y) else np.ones(n_classes)
    return np.tile(prior / prior.sum(), (n_rows, 1))


def _fit_predict(
    member: str,
    X_train: Any,
    y_train: np.ndarray,
    X_pred: list[Any],
    *,
    seed: int,
    n_classes: int,
    categorical: Any,
) -> list[np.ndarray]:
    """Fit ``member`` on the training rows and predict each matrix of ``X_pred``: [rows, n_classes] each.

    Robust to tiny classes: a class absent from the training rows gets probability 0; training rows
    with fewer than two classes give their class frequencies as a constant prediction. The svm's
    calibrator splits its training rows again (stratified, ``CALIBRATION_FOLDS``): it uses as many
    inner folds as its smallest class has examples (at least 2), and leaves out of its training the
    classes with a single example (the svm gives them probability 0; the ensemble's other members
    still score them).
    """
    calibration_folds = CALIBRATION_FOLDS
    if member == "svm":
        present, counts = np.unique(y_train, return_counts=True)
        if (counts < 2).any():
            rows = np.isin(y_train, present[counts >= 2])
            X_train, y_train = X_train[rows], y_train[rows]
            counts = counts[counts >= 2]
        if len(counts):
            calibration_folds = int(min(CALIBRATION_FOLDS, counts.min()))
    if len(np.unique(y_train)) < 2:
        return [_constant(y_train, X.shape[0], n_classes) for X in X_pred]
    est = make_estimator(member, seed=seed, categorical=categorical, calibration_folds=calibration_folds)
    est.fit(X_train, y_train)
    outs = []
    cols = np.asarray(est.classes_, dtype=np.int64)
    for X in X_pred:
        out = np.zeros((X.shape[0], n_classes), dtype=np.float64)
        if X.shape[0]:
            out[:, cols] = est.predict_proba(X)
        outs.append(out)
    return outs


def _fit_fold(
    job: FoldJob,
    *,
    X: Any,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    categorical: Any,
    exclude: np.ndarray | None = None,
    extra: Any = None,
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Fit on the other folds (minus ``exclude`` rows), predict the held-out fold and the ``extra``
    rows (never trained on): probabilities [len(test), K], [len(extra), K] (None without) and seconds."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    train, test = folds[job.fold]
    if exclude is not None:
        train = train[~exclude[train]]
    # OpenMP threads cost more than they give on small folds (HGB on 178 rows: 20 s with 2 threads,
    # 4 s with 1, identical probabilities); big folds keep every core.
    threads = 1 if len(train) < SINGLE_THREAD_ROWS else None
    with warnings.catch_warnings(), threadpool_limits(limits=threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        preds = _fit_predict(
            job.member,
            X[train],
            y[train],
            [X[test]] if extra is None else [X[test], extra],
            seed=job.seed,
            n_classes=job.n_classes,
            categorical=categorical,
        )
    return preds[0], (preds[1] if extra is not None else None), time.perf_counter() - t0


def _run_job(job: FoldJob, payload: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, float]:
    extra = payload.get("extra")
    return _fit_fold(
        job,
        X=payload["X"][job.member],
        y=payload["y"],
        folds=payload["folds"],
        categorical=payload.get("categorical"),
        exclude=payload.get("exclude"),
        extra=extra[job.member] if extra is not None else None,
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
    extra: dict[str, Any] | None = None,
) -> ProbResult:
    """Out-of-sample probabilities for every member in ``X`` (member -> feature matrix).

    Every member copes with classes smaller than the folds (see ``_fit_predict``), but such a
    class's rows are predicted by models that saw few or none of its examples: ``noise_report``
    leaves those classes out (``extra``) rather than scoring them.

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
        extra: feature matrix per member of more rows, never trained on, that every fold's model
            predicts; their probabilities (averaged over folds and members) are ``ProbResult.extra``.
    """
    split = stratified_folds(y, folds=folds, seed=seed)
    jobs = [FoldJob(member=m, fold=f, seed=seed, n_classes=n_classes) for m in X for f in range(len(split))]
    payload = {"X": X, "y": y, "folds": split, "categorical": categorical, "exclude": exclude, "extra": extra}
    fn = functools.partial(_run_job, payload=payload)
    t0 = time.perf_counter()
    results = executor.map(fn, jobs) if executor is not None else [fn(j) for j in jobs]
    members: dict[str, np.ndarray] = {}
    extras: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for m in X:
        members[m] = np.zeros((len(y), n_classes), dtype=np.float64)
        if extra is not None:
            extras[m] = np.zeros((extra[m].shape[0], n_classes), dtype=np.float64)
        seconds[m] = 0.0
    for job, (proba, proba_extra, secs) in zip(jobs, results, strict=True):
        members[job.member][split[job.fold][1]] = proba
        if proba_extra is not None:
            extras[job.member] += proba_extra / len(split)
        seconds[job.member] += secs
    for p in [*members.values(), *extras.values()]:
        p /= np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
    avg = np.mean(np.stack(list(members.values())), axis=0)
    extra_avg = np.mean(np.stack(list(extras.values())), axis=0) if extras else None
    accuracy = {m: float((p.argmax(axis=1) == y).mean()) for m, p in members.items()}
    log.info(
        "cross-validated %d model(s) x %d folds in %.1f s; accuracy vs given labels: %s",
        len(members),
        len(split),
        time.perf_counter() - t0,
        ", ".join(f"{m} {a:.3f}" for m, a in accuracy.items()),
    )
    return ProbResult(
        pred_probs=avg, members=members, extra=extra_avg, accuracy=accuracy, seconds=seconds, folds=len(split)
    )
