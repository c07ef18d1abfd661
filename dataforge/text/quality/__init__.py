"""Quality filters: Gopher quality and repetition, C4 and FineWeb, vectorized over Polars frames.

Four registered steps reproduce datatrove's filters of the same names, with the same defaults,
the same check order and the same drop reasons (prefixed by family):

================================ ======================================= ===========================
step                             datatrove                               reasons
================================ ======================================= ===========================
``filter.gopher_quality``        ``GopherQualityFilter``                 ``gopher_*``
``filter.gopher_repetition``     ``GopherRepetitionFilter``              ``gopher_rep_*``
``filter.c4``                    ``C4QualityFilter`` (rewrites text)     ``c4_*``
``filter.fineweb``               ``FineWebQualityFilter``                ``fineweb_*``
================================ ======================================= ===========================

``PRESETS`` maps the CLI's ``--preset`` names to step lists.

How it is computed: every measure is a Polars expression over the batch. Line, paragraph and
word statistics explode the documents into one long frame keyed by row index and aggregate with
``group_by``. Lines, paragraphs and n-grams are compared by 64-bit hashes with the row folded in;
an n-gram hash is chained from its token hashes, and since an n-gram can only repeat where its
(n-1)-gram prefix repeats, only those positions are carried to n+1. "First occurrence" is
``is_first_distinct`` in row order, so results never depend on hash-map order. No per-document
Python (no ``map_elements``) is used anywhere. Batches of 10k-50k documents work well; on two
cores the Gopher pair runs at about 5-7 MB/s, C4 at about 18 MB/s and FineWeb at about 50 MB/s.

Where the result can differ from datatrove (``benchmarks/README.md`` measures the agreement):

* Words. datatrove tokenizes English with spaCy's tokenizer (blank ``en`` pipeline); here a
  regex approximates it (``_text.tokenize``): the same split of punctuation, clitics ("do" +
  "n't", "it" + "'s") and hyphens between letters, spaCy's abbreviation exceptions ("Mr.",
  "Inc.", single letters) and acronyms ("U.S.") kept whole, "3.5", "1,000", "10:30" kept
  whole, URLs and e-mails kept whole. It differs where spaCy keeps punctuation inside a
  whitespace-separated chunk ("23?KM", "ihlpl!rsbrd", "P(x", "U.S.-built" are one token there,
  several here) and on spaCy's other special cases ("and/or", "gonna", "Wed" -> "We" + "d",
  rarer emoticons). On the benchmark corpus 0.06 % of the Reuters tokens, 0.9 % of the prose
  tokens and 2.2 % of the Usenet tokens (headers, signatures, ASCII art) differ. Every
  word-based measure inherits this: Gopher word counts, mean word length, symbol and alpha
  ratios, stop words, n-grams, FineWeb's newline/word ratio, C4 sentence counts.
* Sentences (C4 ``min_num_sentences``). spaCy's sentencizer rule is reproduced on these
  tokens: a sentence starts at each non-punctuation token that follows punctuation holding a
  sentence-final mark. The mark set is datatrove's ``TERMINAL_PUNCTUATION`` (a superset of the
  sentencizer's by 31 rare-script marks).
* Duplicated n-gram character fraction (``dup_n_grams``). datatrove scans greedily: an n-gram
  seen before adds its characters and the scan jumps n words, so n-grams inside a jumped
  window are never recorded. Here every token covered by any n-gram occurrence that repeats
  an earlier one counts once (the union of those windows). This is a superset of
  datatrove's count, so the fraction is never lower; n-grams are compared as token tuples
  (datatrove joins them without spaces, so "ab c" equals "a bc" there).
* Top n-gram ties are broken by first occurrence, exactly as ``Counter.most_common(1)``.
* ``\\r\\n``. The repetition and FineWeb filters measure a document with ``\\r\\n`` replaced by
  ``\\n`` (datatrove splits on ``\\n`` only, so every CRLF line ends with ``\\r`` and e.g. no
  line "ends with punctuation"). Gopher quality and C4 use ``splitlines`` as datatrove does.
* Disabling. ``None`` disables a rule. datatrove also skips a rule whose threshold is 0
  (``if self.min_doc_words and ...``); here 0 is a real threshold.
* Degenerate documents. Where datatrove would divide by zero (no token, no line) the ratio is
  null here and its rule does not fail.
* C4. Dropped documents keep their original text; ``split_paragraph=False`` (sentence
  splitting instead of lines) is not offered.
* Hash collisions of the 64-bit line, paragraph and n-gram hashes are ignored (probability
  about k²/2⁶⁵ for k items in a batch).
"""

from __future__ import annotations

from dataforge.text.quality.c4 import C4QualityFilter
from dataforge.text.quality.fineweb import FineWebQualityFilter
from dataforge.text.quality.gopher import GopherQualityFilter, GopherRepetitionFilter

#: ``--preset`` name -> the steps (name, options) it runs, in order.
PRESETS: dict[str, list[tuple[str, dict]]] = {
    "gopher": [("filter.gopher_quality", {}), ("filter.gopher_repetition", {})],
    "c4": [("filter.c4", {})],
    "fineweb": [("filter.fineweb", {})],
    "none": [],
}

__all__ = [
    "PRESETS",
    "C4QualityFilter",
    "FineWebQualityFilter",
    "GopherQualityFilter",
    "GopherRepetitionFilter",
]
