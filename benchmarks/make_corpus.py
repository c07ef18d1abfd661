"""Build the near-duplicate benchmark corpus from the real text in ``/work/shared/data``.

The corpus replicates the method of ``shared/docs/research/perf-baselines.md`` with the text this
machine has in ``shared/data`` (28.2 MB in all):

- **Pieces.** Every source text is cut into paragraph pieces of at most ~1 KB (blank lines, or a
  newline followed by indentation as in the Reuters bodies; long paragraphs are cut at sentence
  ends, short ones are merged with the next one of the same text). Sources: Reuters-21578 bodies
  (``near_dup/reuters21578_reut2-000_to_010.jsonl.gz``, field ``body``), 20 Newsgroups test posts
  (``label_noise/20news_test.jsonl.gz``, field ``text``) and the public-domain prose
  (``pretraining_text/public_domain_prose.jsonl.gz``, field ``text``).
- **Base documents.** Each document gets a target size drawn uniformly from 1,000-3,000 bytes and
  takes consecutive pieces until it reaches it (cut at a word boundary at 3,000 bytes). The first
  pass packs the pieces in their original order, so short items are packed back to back and books
  become ~2 KB paragraph groups. That gives about 14k documents; the corpus needs more, so further
  passes pack the same pieces after a new shuffle each (paragraph-level re-mixes of the same real
  text, so two documents rarely share more than one piece). Whitespace is collapsed to single
  spaces and exact duplicates are removed.
- **Injected near-duplicates (10%).** Copies of random base documents with word-level edits
  (substitute, delete or insert a corpus word) at rates of 0, 0.5, 1, 1.5, 2, 3, 5 and 10%, one
  eighth each, shuffled into the corpus.
- **Ground truth** (corpora up to 200k documents): every pair inside each injected group (a base
  document and its copies) with its exact Jaccard on the word-5-gram sets (dataforge's reference
  ``shingles()``, normalized text).

Output (deterministic for a given ``--docs``/``--seed``), in ``benchmarks/_data/`` (git-ignored)::

    corpus-<N>.jsonl             {"id": "d0000000", "text": "..."} per line
    corpus-<N>-parts/part-*.jsonl   the same rows split into --parts files (multi-worker runs)
    corpus-<N>.truth.json        injected pairs with exact Jaccard, and corpus statistics

Run from the repository root::

    .venv-bench/bin/python benchmarks/make_corpus.py --docs 100000
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

DATA = Path("/work/shared/data")
OUT = Path(__file__).resolve().parent / "_data"
EDIT_RATES = (0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.10)
MIN_BYTES, MAX_BYTES = 1000, 3000
PIECE_MAX, PIECE_MIN = 1000, 200
_PARA = re.compile(r"\n\s*\n|\n(?=[ \t]{2,}\S)")
_SENT = re.compile(r"(?<=[.!?])\s+")
_WS = re.compile(r"\s+")


def _jsonl(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def source_texts(data: Path = DATA) -> dict[str, list[str]]:
    """The raw texts of the three sources, in file order."""
    reuters = [
        r["body"] for r in _jsonl(data / "near_dup/reuters21578_reut2-000_to_010.jsonl.gz") if r.get("body")
    ]
    news = [r["text"] for r in _jsonl(data / "label_noise/20news_test.jsonl.gz") if r.get("text")]
    prose = [
        r["text"] for r in _jsonl(data / "pretraining_text/public_domain_prose.jsonl.gz") if r.get("text")
    ]
    return {"reuters": reuters, "20news": news, "prose": prose}


def _split_long(para: str) -> list[str]:
    """Cut a paragraph longer than PIECE_MAX bytes at sentence ends (or spaces)."""
    if len(para.encode()) <= PIECE_MAX:
        return [para]
    out: list[str] = []
    cur = ""
    for sent in _SENT.split(para):
        while len(sent.encode()) > PIECE_MAX:  # one huge "sentence": cut at a space
            cut = sent.rfind(" ", 0, PIECE_MAX)
            cut = cut if cut > 0 else PIECE_MAX
            if cur:
                out.append(cur)
                cur = ""
            out.append(sent[:cut])
            sent = sent[cut:].lstrip()
        if cur and len(cur.encode()) + 1 + len(sent.encode()) > PIECE_MAX:
            out.append(cur)
            cur = sent
        else:
            cur = f"{cur} {sent}" if cur else sent
    if cur:
        out.append(cur)
    return out


def pieces_of(text: str) -> list[str]:
    """Paragraph pieces of one text, each about PIECE_MIN..PIECE_MAX bytes (whitespace collapsed)."""
    paras = [_WS.sub(" ", p).strip() for p in _PARA.split(text)]
    out: list[str] = []
    cur = ""
    for p in paras:
        if not p:
            continue
        for part in _split_long(p):
            cur = f"{cur} {part}" if cur else part
            if len(cur.encode()) >= PIECE_MIN:
                out.extend(_split_long(cur))
                cur = ""
    if cur:
        out.append(cur)
    return out


def _pack(pieces: list[str], rng: random.Random) -> Iterator[str]:
    """Documents of 1-3 KB from consecutive pieces (target size uniform in [1000, 3000] bytes).

    A document ends at the piece that reaches the target, or before it when that piece would
    overshoot by more than half its length; documents over 3,000 bytes are cut at a space.
    """
    doc: list[str] = []
    size = 0
    target = rng.randint(MIN_BYTES, MAX_BYTES)
    for p in pieces:
        n = len(p.encode()) + 1
        if doc and size + n // 2 >= target:  # the piece would overshoot: it starts the next doc
            yield " ".join(doc)
            doc, size = [], 0
            target = rng.randint(MIN_BYTES, MAX_BYTES)
        doc.append(p)
        size += n
        if size >= target:
            text = " ".join(doc)
            if len(text.encode()) > MAX_BYTES:
                b = text.encode()[:MAX_BYTES].decode("utf-8", "ignore")
                cut = b.rfind(" ")
                text = b[:cut] if cut > MIN_BYTES // 2 else b
            yield text
            doc, size = [], 0
            target = rng.randint(MIN_BYTES, MAX_BYTES)


def base_documents(n_base: int, seed: int, data: Path = DATA) -> tuple[list[str], dict[str, int]]:
    """``n_base`` distinct base documents: a first pass in source order, then re-mixed passes."""
    rng = random.Random(seed)
    pieces: list[str] = []
    for texts in source_texts(data).values():
        for t in texts:
            pieces.extend(pieces_of(t))
    seen: set[bytes] = set()
    docs: list[str] = []
    stats = {"pieces": len(pieces), "piece_bytes": sum(len(p.encode()) for p in pieces)}
    order = pieces
    passes = 0
    dups = 0
    while len(docs) < n_base:
        for text in _pack(order, rng):
            key = hashlib.blake2b(text.encode(), digest_size=16).digest()
            if key in seen:
                dups += 1
                continue
            seen.add(key)
            docs.append(text)
            if len(docs) >= n_base:
                break
        if passes == 0:
            stats["first_pass_docs"] = len(docs)
        passes += 1
        order = pieces[:]
        rng.shuffle(order)
    stats["passes"] = passes
    stats["duplicates_removed"] = dups
    return docs, stats


def edit_words(text: str, rate: float, rng: random.Random, vocab: list[str]) -> str:
    """Word-level edits at ``rate``: each edit substitutes, deletes or inserts a word."""
    words = text.split(" ")
    k = sum(1 for _ in range(len(words)) if rng.random() < rate) if rate else 0
    for _ in range(k):
        op = rng.randrange(3)
        i = rng.randrange(len(words))
        if op == 0:
            words[i] = rng.choice(vocab)
        elif op == 1 and len(words) > 1:
            del words[i]
        else:
            words.insert(i, rng.choice(vocab))
    return " ".join(words)


def _jaccard(a: str, b: str) -> float:
    from dataforge.dedup.minhash import shingles

    sa, sb = set(shingles(a)), set(shingles(b))
    union = len(sa | sb)
    return len(sa & sb) / union if union else 0.0


def build(n_docs: int, seed: int = 1, parts: int = 8, out: Path = OUT, truth_max: int = 200_000) -> Path:
    """Write ``corpus-<n_docs>.jsonl`` (and its parts and truth) unless it exists; return its path."""
    path = out / f"corpus-{n_docs}.jsonl"
    meta_path = out / f"corpus-{n_docs}.truth.json"
    if path.exists() and meta_path.exists():
        return path
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 1)
    n_dup = n_docs // 10
    n_base = n_docs - n_dup
    base, stats = base_documents(n_base, seed)
    vocab_rng = random.Random(seed + 2)
    vocab = [w for d in vocab_rng.sample(base, min(2000, len(base))) for w in d.split(" ")]
    # injected near-duplicates: copies of random base documents, one eighth per edit rate
    sources = [rng.randrange(n_base) for _ in range(n_dup)]
    rates = [EDIT_RATES[i * len(EDIT_RATES) // max(1, n_dup)] for i in range(n_dup)]
    copies = [edit_words(base[s], r, rng, vocab) for s, r in zip(sources, rates)]
    # positions: shuffle base documents and copies together
    order = list(range(n_docs))  # < n_base: base doc; else copy (index - n_base)
    rng.shuffle(order)
    pos_of = {src: p for p, src in enumerate(order)}
    texts_of = base.__getitem__
    n_bytes = 0
    n_words = 0
    lengths = []
    parts_dir = out / f"corpus-{n_docs}-parts"
    per_part = -(-n_docs // max(1, parts))
    tmp = path.with_suffix(".jsonl.tmp")
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(open(tmp, "w", encoding="utf-8"))
        part_files = []
        if parts > 1:
            parts_dir.mkdir(exist_ok=True)
            part_files = [
                stack.enter_context(open(parts_dir / f"part-{i:05d}.jsonl", "w", encoding="utf-8"))
                for i in range(parts)
            ]
        for p, src in enumerate(order):
            text = texts_of(src) if src < n_base else copies[src - n_base]
            line = json.dumps({"id": f"d{p:07d}", "text": text}, ensure_ascii=False) + "\n"
            f.write(line)
            if part_files:
                part_files[p // per_part].write(line)
            b = len(text.encode())
            n_bytes += b
            n_words += text.count(" ") + 1
            lengths.append(b)
    lengths.sort()
    meta = {
        "docs": n_docs,
        "base_docs": n_base,
        "injected": n_dup,
        "seed": seed,
        "text_bytes": n_bytes,
        "mean_bytes": n_bytes / n_docs,
        "p5_bytes": lengths[n_docs * 5 // 100],
        "p95_bytes": lengths[n_docs * 95 // 100],
        "words": n_words,
        "parts": parts,
        **stats,
    }
    if n_docs <= truth_max:
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(sources):
            groups.setdefault(s, [pos_of[s]]).append(pos_of[n_base + i])
        pairs = []
        for members in groups.values():
            txt = {
                m: (texts_of(order[m]) if order[m] < n_base else copies[order[m] - n_base]) for m in members
            }
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    a, b = sorted((members[x], members[y]))
                    pairs.append([a, b, round(_jaccard(txt[a], txt[b]), 5)])
        meta["pairs"] = pairs
        meta["pairs_j08"] = sum(1 for p in pairs if p[2] >= 0.8)
    meta["build_seconds"] = round(time.perf_counter() - t0, 1)
    meta_path.write_text(json.dumps(meta))
    tmp.rename(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=100_000, help="number of documents (default 100000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--parts", type=int, default=8, help="also split into this many files (default 8; 1 = no)"
    )
    args = ap.parse_args()
    path = build(args.docs, args.seed, args.parts)
    meta = json.loads(path.with_name(f"corpus-{args.docs}.truth.json").read_text())
    meta.pop("pairs", None)
    print(path)
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
