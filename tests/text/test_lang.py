from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import polars as pl
import pyarrow as pa
import pytest

from dataforge.errors import ConfigError
from dataforge.registry import _REGISTRY
from dataforge.text import lang as lang_module
from dataforge.text.lang import LanguageFilter

SENTENCES = {
    "en": "The committee met on Tuesday to discuss the new budget. Most members agreed that the "
    "plan was reasonable, although a few of them asked for more time to read the details.",
    "de": "Der Ausschuss hat sich am Dienstag getroffen, um über den neuen Haushalt zu sprechen. Die "
    "meisten Mitglieder waren der Meinung, dass der Plan vernünftig ist.",
    "fr": "Le comité s'est réuni mardi pour discuter du nouveau budget. La plupart des membres ont "
    "estimé que le plan était raisonnable, même si certains ont demandé plus de temps.",
    "es": "El comité se reunió el martes para hablar del nuevo presupuesto. La mayoría de los miembros "
    "pensaba que el plan era razonable, aunque algunos pidieron más tiempo para leerlo.",
}


def frame(texts: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts})


def test_registered_and_declares_columns():
    assert _REGISTRY["filter.lang"] is LanguageFilter
    assert LanguageFilter().output_columns() == {"lang": pa.string(), "lang_score": pa.float32()}


def test_detects_four_languages():
    out = LanguageFilter().apply(frame(list(SENTENCES.values())))
    assert out.frame["lang"].to_list() == list(SENTENCES)
    assert out.frame["lang_score"].dtype == pl.Float32
    assert all(0.9 < s <= 1.0 for s in out.frame["lang_score"].to_list())
    assert out.frame["id"].to_list() == ["d0", "d1", "d2", "d3"]


def test_annotate_only_never_drops():
    texts = [*SENTENCES.values(), "", "ok", "12345 678", "Shr 27 cts vs 29 cts"]
    out = LanguageFilter(min_score=0.99).apply(frame(texts))
    assert out.reason is None
    assert out.detail is None
    assert out.frame.height == len(texts)
    assert out.counters == {"classified": 6, "unclassified": 2}


def test_languages_filter_drops_others_with_reason_and_detail():
    out = LanguageFilter(languages=("en", "fr")).apply(frame(list(SENTENCES.values())))
    assert out.reason.to_list() == [None, "lang_mismatch", None, "lang_mismatch"]
    de_detail, es_detail = out.detail[1], out.detail[3]
    assert de_detail.startswith("lang=de score=0.9")
    assert de_detail.endswith(" not in [en, fr]")
    assert es_detail.startswith("lang=es score=")
    assert out.detail[0] is None


def test_min_score_drops_uncertain_rows():
    text = "Qtly div eights cts vs 7.5 cts prior"  # terse newswire: English, but the model is unsure
    score = LanguageFilter().apply(frame([text])).frame["lang_score"][0]
    assert 0.3 < score < 0.65
    out = LanguageFilter(languages=("en",), min_score=0.65).apply(frame([text, SENTENCES["en"]]))
    assert out.reason.to_list() == ["lang_low_score", None]
    shown = int(score * 100) / 100
    assert out.detail[0] == f"lang=en score={shown:.2f} < min_score=0.65"
    lenient = LanguageFilter(languages=("en",), min_score=0.3).apply(frame([text]))
    assert lenient.reason.to_list() == [None]


def test_low_score_wins_over_mismatch():
    text = "Shr 80 cts vs 72 cts Net 5.1 mln vs 4.3 mln"
    out = LanguageFilter(languages=("de",), min_score=0.99).apply(frame([text]))
    assert out.reason.to_list() == ["lang_low_score"]


def test_empty_and_featureless_text_get_nulls():
    texts = ["", "   \n\t", "ok", SENTENCES["en"]]
    out = LanguageFilter().apply(frame(texts))
    assert out.frame["lang"].to_list() == [None, None, None, "en"]
    assert out.frame["lang_score"].to_list()[:3] == [None, None, None]
    dropped = LanguageFilter(languages=("en",)).apply(frame(texts))
    assert dropped.reason.to_list() == ["lang_low_score"] * 3 + [None]
    assert dropped.detail[0] == "lang=null score=null: no recognizable text"


def test_max_chars_limits_what_is_classified():
    text = SENTENCES["de"] + " " + SENTENCES["en"] * 5
    assert LanguageFilter(max_chars=150).apply(frame([text])).frame["lang"][0] == "de"
    assert LanguageFilter().apply(frame([text])).frame["lang"][0] == "en"


def test_restrict_to_limits_the_label_set():
    text = SENTENCES["es"]
    out = LanguageFilter(restrict_to=("en", "de")).apply(frame([text]))
    assert out.frame["lang"][0] in ("en", "de")
    # the full model is not affected by the restricted copy
    assert LanguageFilter().apply(frame([text])).frame["lang"][0] == "es"


def test_deterministic_and_independent_of_batch():
    texts = [*SENTENCES.values(), "Shr 27 cts vs 29 cts", "Bonjour tout le monde"]
    first = LanguageFilter().apply(frame(texts)).frame
    second = LanguageFilter().apply(frame(texts)).frame
    assert first.equals(second)
    alone = [LanguageFilter().apply(frame([t])).frame.row(0) for t in texts]
    assert [r[2:] for r in alone] == [r[2:] for r in first.rows()]


def test_pickles_without_the_model_and_works_after_unpickling(monkeypatch):
    step = LanguageFilter(languages=("en",), min_score=0.5)
    payload = pickle.dumps(step)
    assert len(payload) < 1000  # the model is not in the step
    monkeypatch.setattr(lang_module, "_IDENTIFIERS", {})  # as in a fresh process
    restored = pickle.loads(payload)
    assert restored == step
    out = restored.apply(frame(list(SENTENCES.values())))
    assert out.reason.to_list() == [None, "lang_mismatch", "lang_mismatch", "lang_mismatch"]


def test_same_results_in_a_spawned_process():
    step = LanguageFilter(languages=("en",))
    batch = frame([*SENTENCES.values(), "", "Shr 27 cts vs 29 cts"])
    here = step.apply(batch)
    # the bound method pickles the step; the fresh interpreter loads its own model
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        there = pool.submit(step.apply, batch).result(timeout=120)
    assert there.frame.equals(here.frame)
    assert there.reason.to_list() == here.reason.to_list()
    assert there.detail.to_list() == here.detail.to_list()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"languages": ("en", "xx")}, "'xx'"),
        ({"languages": "en"}, "'en'"),
        ({"languages": ()}, r"\(\)"),
        ({"languages": ("en", 3)}, "3"),
        ({"restrict_to": ("eng",)}, "'eng'"),
        ({"min_score": 1.5}, "1.5"),
        ({"min_score": "high"}, "'high'"),
        ({"max_chars": 0}, "0"),
        ({"max_chars": 10.5}, "10.5"),
        ({"languages": ("fr",), "restrict_to": ("en", "de")}, "'fr'"),
    ],
)
def test_bad_options_raise_config_error_naming_the_value(options, named):
    with pytest.raises(ConfigError, match=named) as info:
        LanguageFilter(**options)
    assert "filter.lang" in str(info.value)


def test_unknown_language_lists_valid_codes():
    with pytest.raises(ConfigError, match=r"valid: .*\bde\b.*\ben\b"):
        LanguageFilter(languages=("english",))


def test_list_options_become_tuples():
    step = LanguageFilter(languages=["en", "de", "en"])
    assert step.languages == ("en", "de")
    assert step.options()["languages"] == ["en", "de"]
