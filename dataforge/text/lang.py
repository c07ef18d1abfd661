"""``filter.lang``: offline language identification with py3langid.

py3langid ships its naive-Bayes model inside the wheel (no download). The model is loaded once per
process into a module-level cache (never into the step, so a pickled step stays a few hundred
bytes and works in a fresh worker process). Results are deterministic: each document is
classified on its own (batch composition and order do not matter), and the same text gives the
same label and score in every process on the same platform and numpy build.

Classification is a per-document Python call (a byte-level n-gram DFA walk in pure Python plus a
small numpy product), so it is the slow part of a pipeline: about 2,300-3,000 docs/s (1.5-2 MB/s
of classified text) on one core for Reuters-21578 bodies (11,000 newswire stories, 10,107
non-empty, median 521 characters) with ``max_chars=2000``, and about 3,500-5,000 docs/s with
``max_chars=500`` (2-core machine shared with other jobs). The cost grows linearly with the
characters classified, which is why only the first ``max_chars`` characters are used; a few
paragraphs are enough to tell the language.
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import polars as pl
import pyarrow as pa

from dataforge.errors import ConfigError, choices
from dataforge.registry import register
from dataforge.step import Rule, Step, StepOutput, check_range, first_failing

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()
# restrict_to (sorted tuple, or None for the full model) -> (identifier, its featureless answer)
_IDENTIFIERS: dict[tuple[str, ...] | None, tuple[LanguageIdentifier, tuple[str, float]]] = {}


def identifier(restrict_to: tuple[str, ...] | None = None) -> LanguageIdentifier:
    """The process-wide py3langid identifier (probabilities normalized), optionally restricted.

    Args:
        restrict_to: label set to restrict the model to (``set_languages``), or None for all.

    Returns:
        A ``py3langid.langid.LanguageIdentifier``; loaded on first use (about 1 s), then cached.

    Example:
        >>> identifier().classify("The cat sat on the mat and looked out of the window.")[0]
        'en'
    """
    return _cached(restrict_to)[0]


def model_labels() -> list[str]:
    """Every label the bundled py3langid model knows (ISO 639-1 codes and a few 639-3 ones)."""
    return list(identifier().labels)


def _cached(restrict_to: tuple[str, ...] | None) -> tuple[LanguageIdentifier, tuple[str, float]]:
    key = tuple(sorted(set(restrict_to))) if restrict_to else None
    with _LOCK:
        if key not in _IDENTIFIERS:
            if None not in _IDENTIFIERS:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier

                base = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
                _IDENTIFIERS[None] = (base, base.classify(""))
                logger.debug("loaded py3langid model (%d labels)", len(base.labels))
            if key is not None:
                # set_languages rebinds (never mutates) the model arrays, so a shallow copy suffices.
                restricted = copy.copy(_IDENTIFIERS[None][0])
                restricted.set_languages(key)
                _IDENTIFIERS[key] = (restricted, restricted.classify(""))
        return _IDENTIFIERS[key]


@register("filter.lang")
@dataclass(kw_only=True)
class LanguageFilter(Step):
    """Identify each document's language (py3langid) and optionally keep only some languages.

    Adds ``lang`` (label, e.g. ``"en"``) and ``lang_score`` (probability in [0, 1]). Text that
    gives the model nothing to go on (empty, whitespace only, or no n-gram the model knows, such
    as ``"ok"``) gets null for both; ``"12345"`` does have features and comes out as ``zxx``
    (no linguistic content) with a low score. The model sees only the first ``max_chars`` characters.

    Args:
        languages: labels to keep (ISO 639-1 codes such as ``("en", "de")``); None annotates
            only and never drops.
        min_score: with ``languages`` set, rows whose best score is below this are dropped as
            ``lang_low_score`` (default 0.65, datatrove's fastText threshold).
        max_chars: classify only the first N characters (speed: cost is linear in length, and a
            few paragraphs decide the language).
        restrict_to: restrict the model itself to these labels (py3langid ``set_languages``),
            so every document gets one of them; must contain every code in ``languages``.

    Returns:
        ``apply`` returns the frame with ``lang`` and ``lang_score``, reasons ``lang_low_score``
        and ``lang_mismatch``, and the counters ``classified`` and ``unclassified``.

    Example:
        >>> step = LanguageFilter(languages=("en",))
        >>> out = step.apply(pl.DataFrame({"text": ["Das ist ein kurzer deutscher Satz über das Wetter."]}))
        >>> out.reason.to_list(), out.frame["lang"].to_list()
        (['lang_mismatch'], ['de'])
    """

    summary: ClassVar[str] = "Language identification (py3langid); keep listed languages"

    languages: tuple[str, ...] | None = None
    min_score: float = 0.65
    max_chars: int = 2000
    restrict_to: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.languages = _codes(self.name, "languages", self.languages)
        self.restrict_to = _codes(self.name, "restrict_to", self.restrict_to)
        check_range(self.name, "min_score", self.min_score, 0.0, 1.0)
        if isinstance(self.max_chars, bool) or not isinstance(self.max_chars, int):
            msg = f"{self.name}: option 'max_chars' must be an integer, got {self.max_chars!r}"
            raise ConfigError(msg)
        check_range(self.name, "max_chars", self.max_chars, 1, None)
        if self.languages is None and self.restrict_to is None:
            return
        known = set(model_labels())
        for option, codes in (("languages", self.languages), ("restrict_to", self.restrict_to)):
            for code in codes or ():
                if code not in known:
                    msg = f"{self.name}: unknown language {code!r} in {option!r}; valid: {choices(known)}"
                    raise ConfigError(msg)
        if self.languages is not None and self.restrict_to is not None:
            missing = [code for code in self.languages if code not in self.restrict_to]
            if missing:
                msg = (
                    f"{self.name}: language {missing[0]!r} is in 'languages' but not in "
                    f"'restrict_to' ({', '.join(self.restrict_to)}), so it could never be kept"
                )
                raise ConfigError(msg)

    def output_columns(self) -> dict[str, pa.DataType]:
        """``lang`` (string) and ``lang_score`` (float32)."""
        return {"lang": pa.string(), "lang_score": pa.float32()}

    def apply(self, frame: pl.DataFrame) -> StepOutput:
        """Classify every row, add ``lang``/``lang_score``, and drop per ``languages``/``min_score``."""
        ident, featureless = _cached(self.restrict_to)
        head = frame["text"].str.slice(0, self.max_chars)
        rows = (head.str.strip_chars().str.len_chars() > 0).arg_true()
        labels: list[str | None] = [None] * frame.height
        scores = np.full(frame.height, np.nan, dtype=np.float32)
        classify = ident.classify
        for i, text in zip(rows.to_list(), head.gather(rows).to_list()):
            result = classify(text)
            if result != featureless:  # the model's answer when it found no n-gram at all
                labels[i], scores[i] = result
        lang = pl.Series("lang", labels, dtype=pl.Utf8)
        score = pl.Series("lang_score", scores, dtype=pl.Float32, nan_to_null=True)
        out = frame.with_columns(lang, score)
        unclassified = int(lang.null_count())
        counters = {"classified": frame.height - unclassified, "unclassified": unclassified}
        if self.languages is None:
            return StepOutput(out, counters=counters)
        reason, detail = first_failing(out, self._rules())
        return StepOutput(out, reason=reason, detail=detail, counters=counters)

    def _rules(self) -> list[Rule]:
        lang, score = pl.col("lang"), pl.col("lang_score")
        # Two decimals, truncated (not rounded) so a shown score is not >= the threshold it failed;
        # the 1e-5 absorbs float32 error (0.35 is stored as 0.34999999).
        cents = (score.cast(pl.Float64) * 100 + 1e-5).floor().cast(pl.Int64).cast(pl.Utf8).str.zfill(3)
        shown = pl.concat_str(cents.str.head(-2), pl.lit("."), cents.str.tail(2))
        wanted = ", ".join(self.languages or ())
        low_detail = (
            pl.when(lang.is_null())
            .then(pl.lit("lang=null score=null: no recognizable text"))
            .otherwise(
                pl.format("lang={} score={} < min_score={}", lang, shown, pl.lit(f"{self.min_score:g}"))
            )
        )
        return [
            # compared in float32, the precision the score is stored in
            Rule("lang_low_score", lang.is_null() | (score < pl.lit(self.min_score, pl.Float32)), low_detail),
            Rule(
                "lang_mismatch",
                ~lang.is_in(list(self.languages or ())),
                pl.format("lang={} score={} not in [{}]", lang, shown, pl.lit(wanted)),
            ),
        ]


def _codes(step: str, option: str, value: object) -> tuple[str, ...] | None:
    """Validate a list of language codes: None, or a non-empty tuple/list of strings."""
    if value is None:
        return None
    if isinstance(value, str):
        msg = f"{step}: option {option!r} must be a list of language codes, got the string {value!r}"
        raise ConfigError(msg)
    if not isinstance(value, tuple | list) or not value or not all(isinstance(v, str) for v in value):
        msg = f"{step}: option {option!r} must be a non-empty list of language codes, got {value!r}"
        raise ConfigError(msg)
    return tuple(dict.fromkeys(value))
