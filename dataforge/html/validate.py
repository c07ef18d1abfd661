"""The page of ``dataforge validate --report FILE``: shard checks and the tiny training run's loss
curve against the unigram baseline it must beat."""

from __future__ import annotations

from typing import Any

from dataforge.html import kit


def render_validation(d: dict[str, Any]) -> str:
    """The page for a :class:`dataforge.train.validate.ValidationResult` as a dict."""
    e = kit.esc
    problems = d.get("problems", [])
    t = d.get("train")
    ok = not problems and (t is None or t.get("passed"))
    body = [
        kit.cards(
            [
                ("shards checked", f"{d.get('shards_checked', 0):,}"),
                ("rows", f"{d.get('rows', 0):,}"),
                ("tokens", f"{d.get('tokens', 0):,}"),
                ("problems", f"{len(problems):,}"),
                ("verdict", "pass" if ok else "FAIL"),
            ]
        ),
        kit.section("shards", "Shard checks"),
    ]
    if problems:
        body.append("<ul>" + "".join(f"<li class='bad'>{e(p)}</li>" for p in problems) + "</ul>")
    else:
        body.append(
            "<p class='ok'>✓ every shard matches the manifest: size, sha256, schema, rows and tokens.</p>"
        )
    body.append(kit.section("train", "Training run"))
    if t is None:
        body.append("<p class='muted'>No training run (--train-steps 0, or a shard check failed).</p>")
    else:
        verdict = "below" if t["passed"] else "NOT below"
        body.append(
            f"<p>Stage {t['stage']}: a byte-level Transformer trained {t['steps']} steps of {t['batch_size']} x "
            f"{t['seq_len']} tokens through <code>dataforge.train.ShardDataset</code>. Final loss "
            f"<b>{t['final_loss']:.3f}</b> nats/token is {verdict} the unigram baseline {t['unigram_baseline']:.3f} "
            f"(first step {t['first_loss']:.3f}); {t['tokens_per_s']:,.0f} tokens/s.</p>"
        )
        body.append(
            kit.series_svg(
                t.get("losses", []),
                title="training loss",
                xlabel="step",
                ylabel="loss (nats per token)",
                hline=t["unigram_baseline"],
                hline_label=f"unigram baseline {t['unigram_baseline']:.3f}",
            )
        )
    return kit.page(
        "dataforge validate",
        body,
        subtitle=f"curriculum <code>{e(d.get('path', ''))}</code>",
        toc=[("shards", "shards"), ("train", "training")],
    )
