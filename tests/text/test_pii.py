from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataforge.errors import ConfigError
from dataforge.registry import _REGISTRY
from dataforge.step import StepOutput
from dataforge.text.pii import (
    _MARK,
    PHONE_FORMATS,
    PII_TYPES,
    PLACEHOLDERS,
    PiiRedact,
    _detectors,
    card_valid,
    iban_valid,
    luhn_valid,
    ssn_valid,
)


def run(texts: list[str], **options) -> StepOutput:
    return PiiRedact(**options).apply(pl.DataFrame({"text": texts}))


def red(text: str, **options) -> str:
    return run([text], **options).frame["text"][0]


def reference(text: str, types: tuple[str, ...] = PII_TYPES) -> tuple[str, dict[str, int]]:
    """Pure-Python redaction: each detector's regex scan over the whole text, in precedence order,
    repeated until nothing more is found."""
    detectors = _detectors(PHONE_FORMATS)
    counts = dict.fromkeys(PII_TYPES, 0)
    changed = True
    while changed:
        changed = False
        for kind in PII_TYPES:
            if kind not in types:
                continue
            spans = detectors[kind].find(text)
            counts[kind] += len(spans)
            changed |= bool(spans)
            for a, b in reversed(spans):
                text = text[:a] + _MARK[kind] + text[b:]
    for kind in PII_TYPES:
        text = text.replace(_MARK[kind], PLACEHOLDERS[kind])
    return text, counts


def test_registered():
    assert _REGISTRY["pii.redact"] is PiiRedact
    assert PiiRedact.name == "pii.redact"


def test_build_step_from_yaml_values():
    from dataforge.registry import build_step

    try:
        step = build_step("pii.redact", {"types": ["email", "phone"], "mode": "detect"})
    except ModuleNotFoundError as exc:  # another step module of the tree is not written yet
        pytest.skip(f"registry cannot load every step module: {exc}")
    assert isinstance(step, PiiRedact)
    assert step.types == ("email", "phone")
    assert step.options()["types"] == ["email", "phone"]


def test_declared_columns_match_the_output():
    step = PiiRedact()
    assert step.output_columns() == {"pii_count": pa.int32(), "pii_types": pa.list_(pa.string())}
    out = step.apply(pl.DataFrame({"text": ["mail a.b@example.org", "nothing here"]}))
    assert out.frame.schema["pii_count"] == pl.Int32
    assert out.frame.schema["pii_types"] == pl.List(pl.String)
    assert out.frame["pii_count"].to_list() == [1, 0]
    assert out.frame["pii_types"].to_list() == [["email"], []]


# --- true positives: the placeholder replaces exactly the PII span ---------------------------

POSITIVES = {
    "email": [
        ("Write to jane.doe@example.com.", "Write to <EMAIL>."),
        ("(bob_smith+news@mail.example.co.uk)", "(<EMAIL>)"),
        ("à émile.zola@exemple.fr!", "à <EMAIL>!"),
        ("почта: иван.петров@почта.example.ru", "почта: <EMAIL>"),
        ("From: <x-y.z@sub-domain.example.org>, today", "From: <<EMAIL>>, today"),
        ("mailto:Info@Example.IO;", "mailto:<EMAIL>;"),
        ("a@b.co a@b.co", "<EMAIL> <EMAIL>"),
    ],
    "phone": [
        ("Call (212) 555-1234.", "Call <PHONE>."),
        ("Call 212-555-1234, now", "Call <PHONE>, now"),
        ("212.555.1234", "<PHONE>"),
        ("tel 212 555 1234!", "tel <PHONE>!"),
        ("ring 1-800-555-0199 today", "ring <PHONE> today"),
        ("x: +1 (212) 555-1234 x123;", "x: <PHONE>;"),
        ("desk 212-555-1234 ext. 42 or", "desk <PHONE> or"),
        ("London +44 20 7946 0958.", "London <PHONE>."),
        ("London +44 (0)20 7946 0958", "London <PHONE>"),
        ("Paris +33 1 23 45 67 89", "Paris <PHONE>"),
        ("Berlin +49 30 12345678", "Berlin <PHONE>"),
        ("Tokyo 03-1234-5678.", "Tokyo <PHONE>."),
        ("Tokyo +81-3-1234-5678.", "Tokyo <PHONE>."),
        ("E.164 +442079460958", "E.164 <PHONE>"),
        ("Bonn (+49) 0228 738786", "Bonn <PHONE>"),
        ("UK 020 7946 0958 (office)", "UK <PHONE> (office)"),
        ("tel 800 533 1744", "tel <PHONE>"),
        ("FR 01 23 45 67 89", "FR <PHONE>"),
        ("DE (030) 1234567", "DE <PHONE>"),
        ("CA 94086 408-733-3283", "CA 94086 <PHONE>"),  # ZIP code then phone
    ],
    "ip": [
        ("host 192.168.0.1:8080", "host <IP_ADDRESS>:8080"),
        ("from [10.0.0.255].", "from [<IP_ADDRESS>]."),
        ("ip=255.255.255.255,", "ip=<IP_ADDRESS>,"),
        ("v6 2001:db8:85a3::8a2e:370:7334 ok", "v6 <IP_ADDRESS> ok"),
        ("2001:0db8:0000:0000:0000:ff00:0042:8329", "<IP_ADDRESS>"),
        ("(fe80:0:0:0:202:b3ff:fe1e:8329)", "(<IP_ADDRESS>)"),
        ("mapped ::ffff:192.0.2.128.", "mapped <IP_ADDRESS>."),
        ("addr: 2001:db8::1:", "addr: <IP_ADDRESS>:"),
    ],
    "credit_card": [
        ("Visa 4111 1111 1111 1111.", "Visa <CREDIT_CARD>."),
        ("Visa 4111-1111-1111-1111,", "Visa <CREDIT_CARD>,"),
        ("card:4012888888881881", "card:<CREDIT_CARD>"),
        ("visa13 4222222222222", "visa13 <CREDIT_CARD>"),
        ("MC 5555 5555 5555 4444", "MC <CREDIT_CARD>"),
        ("MC2 2223003122003222", "MC2 <CREDIT_CARD>"),
        ("Amex 3782 822463 10005;", "Amex <CREDIT_CARD>;"),
        ("Amex 378282246310005", "Amex <CREDIT_CARD>"),
        ("Discover 6011 1111 1111 1117", "Discover <CREDIT_CARD>"),
        ("Diners 3056 930902 5904", "Diners <CREDIT_CARD>"),
        ("JCB 3530111333300000", "JCB <CREDIT_CARD>"),
        ("UnionPay 6200000000000005", "UnionPay <CREDIT_CARD>"),
        ("(4111 1111 1111 1111 exp 12/25)", "(<CREDIT_CARD> exp 12/25)"),
        ("4111 1111 1111 1111 123", "<CREDIT_CARD> 123"),  # trailing CVV group
    ],
    "ssn": [
        ("SSN: 123-45-6789.", "SSN: <SSN>."),
        ("(078-05-1120)", "(<SSN>)"),
        ("ssn=665-99-0001;", "ssn=<SSN>;"),
    ],
    "iban": [
        ("IBAN DE89 3704 0044 0532 0130 00.", "IBAN <IBAN>."),
        ("IBAN: DE89370400440532013000,", "IBAN: <IBAN>,"),
        ("GB82WEST12345698765432", "<IBAN>"),
        ("to NL91ABNA0417164300 today", "to <IBAN> today"),
        ("FR14 2004 1010 0505 0001 3M02 606", "<IBAN>"),
        ("(NO9386011117947)", "(<IBAN>)"),
        ("BE68 5390 0754 7034", "<IBAN>"),
        ("MT84MALT011000012345MTLCAST001S", "<IBAN>"),
        ("DE89370400440532013000 EUR", "<IBAN> EUR"),  # capitals after it are cut off
    ],
}


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [(kind, text, expected) for kind, cases in POSITIVES.items() for text, expected in cases],
)
def test_true_positive(kind, text, expected):
    out = run([text])
    assert out.frame["text"][0] == expected
    assert out.counters[kind] == expected.count(PLACEHOLDERS[kind])
    assert out.frame["pii_types"][0].to_list() == [kind]


# --- near misses: left alone -----------------------------------------------------------------

NEGATIVES = [
    "In 1987 output rose; 1986 and 1988 too.",
    "Dates 2024-03-15, 03/15/2024, 15.03.2024 and 1987-1988.",
    "Prices $1,234,567 and 155,221 bags, 3.5 mln dlrs, 12.5 pct, +2.4 pct.",
    "Version 1.2.3 and v2.0.1.5 and version 10.2.3.4 and section 4.1.2.3.",
    "Dotted quad 1.2.3.4 in an outline; OID 1.3.6.1.4.1.",
    "Octets 256.1.1.1 and 10.0.0.300 and 192.168.001.001.",
    "Card 4111 1111 1111 1112 fails Luhn; 1234567812345678 too.",
    "Random 16 digits 8231 4470 1195 0232 with no issuer.",
    "Long run 41111111111111111111111 is too long.",
    "ISBN 978-3-16-148410-0 and 9783161484100 and 0-306-40615-2.",
    "SSN-like 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567, 123-45-0000.",
    "Nine digits 123456789 and 123 45 6789 without dashes.",
    "IBAN DE89 3704 0044 0532 0130 01 bad check; DE8937040044053201300 short.",
    "Unknown country ZZ89370400440532013000 and ISIN US0378331005.",
    "Short numbers 555-1234, 911, 411, call 12345.",
    "Invalid NANP (123) 456-7890 and 212-155-1234 and 911-555-1234.",
    "Scores 04-03 05-02 and times 10:30:00, 12:30.",
    "Ratio 3:2:1 and C++ std::vector and a::b::c.",
    "Retina logo@2x.png and icon@3x.jpg.",
    "Twitter @someone and foo@localhost.",
    "Sports table 3702 186 4 3.01 43 14",
    "Totals 500 750 1000 and 100 200 3000.",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_near_miss_is_left_alone(text):
    out = run([text])
    assert out.frame["text"][0] == text
    assert out.frame["pii_count"][0] == 0
    assert sum(out.counters.values()) == 0


def test_validators():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert card_valid("4111 1111 1111 1111") and not card_valid("4111 1111 1111 1112")
    assert not card_valid("9111111111111111")  # Luhn-valid but no issuer starts with 9
    assert card_valid("6011-1111-1111-1117")
    assert iban_valid("GB82WEST12345698765432")
    assert not iban_valid("GB82WEST1234569876543")  # wrong length for GB
    assert not iban_valid("GB83WEST12345698765432")  # wrong check digits
    assert not iban_valid("XX82WEST12345698765432")  # unknown country
    assert ssn_valid("123-45-6789")
    assert not any(ssn_valid(s) for s in ("000-45-6789", "666-45-6789", "987-45-6789", "123-00-6789"))
    assert not ssn_valid("123-45-0000")


def test_glued_numbers_are_not_pii():
    texts = [
        "part 12-212-555-1234 ok",  # phone continuing a dash chain
        "x 1-123-45-6789 y",  # SSN continuing a dash chain
        "id 4111111111111111.50",  # a decimal, not a card
        "abc4111111111111111",  # glued to letters
        "1.10.0.0.1 chain",
    ]
    out = run(texts)
    assert out.frame["text"].to_list() == texts
    assert out.frame["pii_count"].to_list() == [0] * len(texts)


def test_a_number_next_to_a_redacted_span_is_judged_again():
    # the SSN touches the IP's digits, so the first pass rejects it; once the IP is a marker the
    # SSN stands alone (and a second run of the step has nothing left to do)
    out = run(["hosts 10.0.0.1-123-45-6789 end"])
    assert out.frame["text"][0] == "hosts <IP_ADDRESS>-<SSN> end"
    assert out.counters["ip"] == 1 and out.counters["ssn"] == 1
    assert out.frame["pii_count"][0] == 2


def test_phone_formats_option():
    text = "UK 020 7946 0958 US 212-555-1234 intl +44 20 7946 0958"
    assert red(text, phone_formats=("nanp",)) == "UK 020 7946 0958 US <PHONE> intl +44 20 7946 0958"
    assert red(text, phone_formats=("national", "international")) == (
        "UK <PHONE> US 212-555-1234 intl <PHONE>"
    )
    assert red(text) == "UK <PHONE> US <PHONE> intl <PHONE>"


# --- several PII, counters, precedence -------------------------------------------------------

DOC = (
    "Contact jane@example.com or (212) 555-1234; card 4111 1111 1111 1111, "
    "SSN 123-45-6789, IBAN GB82 WEST 1234 5698 7654 32, from 203.0.113.9 and +44 20 7946 0958."
)
DOC_REDACTED = (
    "Contact <EMAIL> or <PHONE>; card <CREDIT_CARD>, SSN <SSN>, IBAN <IBAN>, from <IP_ADDRESS> and <PHONE>."
)


def test_several_types_in_one_document():
    out = run([DOC])
    assert out.frame["text"][0] == DOC_REDACTED
    assert out.counters == {"email": 1, "iban": 1, "credit_card": 1, "ssn": 1, "ip": 1, "phone": 2}
    assert out.frame["pii_count"][0] == 7
    assert out.frame["pii_types"][0].to_list() == ["credit_card", "email", "iban", "ip", "phone", "ssn"]


def test_counters_add_up_over_rows():
    texts = [DOC, "", "no pii at all", "a@b.org c@d.org", "call 212-555-1234", DOC]
    out = run(texts)
    assert set(out.counters) == set(PII_TYPES)
    assert out.counters["email"] == 4
    assert out.counters["phone"] == 5
    assert out.frame["pii_count"].to_list() == [7, 0, 0, 2, 1, 7]
    assert sum(out.counters.values()) == out.frame["pii_count"].sum()


def test_every_counter_is_present_and_zero_without_pii():
    out = run(["nothing", "to see"])
    assert out.counters == dict.fromkeys(PII_TYPES, 0)
    assert out.frame["pii_types"].to_list() == [[], []]


def test_email_wins_over_phone_inside_it():
    text = "write call-212-555-1234@example.com now"
    out = run([text])
    assert out.frame["text"][0] == "write <EMAIL> now"
    assert out.counters["email"] == 1 and out.counters["phone"] == 0
    # with emails off, the digits are a phone number
    assert red(text, types=("phone",)) == "write call-<PHONE>@example.com now"


def test_detect_mode_counts_like_redact_and_keeps_text():
    texts = [DOC, "a@b.org", "none"]
    detect = run(texts, mode="detect")
    redact = run(texts)
    assert detect.frame["text"].to_list() == texts
    assert detect.counters == redact.counters
    assert detect.frame["pii_count"].to_list() == redact.frame["pii_count"].to_list()
    assert detect.frame["pii_types"].to_list() == redact.frame["pii_types"].to_list()


def test_types_subset_only_redacts_those():
    out = run([DOC], types=("email",))
    assert out.frame["text"][0] == DOC.replace("jane@example.com", "<EMAIL>")
    assert out.counters == {"email": 1, "iban": 0, "credit_card": 0, "ssn": 0, "ip": 0, "phone": 0}
    assert out.frame["pii_types"][0].to_list() == ["email"]


def test_placeholders_override_and_do_not_leak_into_later_types():
    text = "a@b.org then 212-555-1234"
    out = run([text], placeholders={"email": "[MAIL 212-555-9999]"})
    assert out.frame["text"][0] == "[MAIL 212-555-9999] then <PHONE>"
    assert out.counters["phone"] == 1


def test_redaction_is_idempotent():
    step = PiiRedact()
    once = step.apply(pl.DataFrame({"text": [DOC, "x@y.org 10.1.2.3"]}))
    twice = step.apply(once.frame)
    assert twice.frame["text"].to_list() == once.frame["text"].to_list()
    assert sum(twice.counters.values()) == 0
    assert twice.frame["pii_count"].to_list() == [0, 0]


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "bad"),
    [
        ({"types": ("email", "passport")}, "'passport'"),
        ({"types": "email"}, "'email'"),
        ({"types": ()}, "'types' is empty"),
        ({"mode": "scrub"}, "'scrub'"),
        ({"placeholders": {"mail": "<M>"}}, "'mail'"),
        ({"placeholders": {"email": 3}}, "3"),
        ({"placeholders": ["<EMAIL>"]}, "'placeholders'"),
        ({"phone_formats": ("uk",)}, "'uk'"),
    ],
)
def test_bad_options_raise_config_error_naming_the_value(options, bad):
    with pytest.raises(ConfigError, match=r"valid|must|empty") as info:
        PiiRedact(**options)
    assert bad in str(info.value)


def test_unknown_type_error_lists_valid_types():
    with pytest.raises(ConfigError) as info:
        PiiRedact(types=("emial",))
    message = str(info.value)
    assert "'emial'" in message
    assert all(t in message for t in PII_TYPES)


# --- frames -----------------------------------------------------------------------------------


def test_empty_text_and_empty_frame():
    out = run(["", " ", "\n"])
    assert out.frame["text"].to_list() == ["", " ", "\n"]
    assert out.frame["pii_count"].to_list() == [0, 0, 0]
    empty = PiiRedact().apply(pl.DataFrame({"text": []}, schema={"text": pl.String}))
    assert empty.frame.height == 0
    assert set(empty.frame.columns) == {"text", "pii_count", "pii_types"}
    assert empty.counters == dict.fromkeys(PII_TYPES, 0)


def test_unicode_around_pii():
    texts = [
        "Écrivez à émile.zola@example.fr — merci.",
        "电子邮件：bob@example.com。电话：+86 10 1234 5678。",
        "Тел. +7 495 123-45-67, почта ivan@example.ru",
        "Zahlung an DE89 3704 0044 0532 0130 00 (Überweisung) ✓",
        "🙂 4111 1111 1111 1111 🙂",
    ]
    out = run(texts)
    assert out.frame["text"].to_list() == [
        "Écrivez à <EMAIL> — merci.",
        "电子邮件：<EMAIL>。电话：<PHONE>。",
        "Тел. <PHONE>, почта <EMAIL>",
        "Zahlung an <IBAN> (Überweisung) ✓",
        "🙂 <CREDIT_CARD> 🙂",
    ]


def test_other_columns_pass_through_untouched():
    frame = pl.DataFrame(
        {
            "id": ["a", "b", "c"],
            "text": ["x@y.org", "plain", "212-555-1234"],
            "meta": ['{"k": 1}', None, "{}"],
            "_source": ["f.jsonl"] * 3,
            "_row": [0, 1, 2],
            "_line": [1, 2, 3],
        }
    )
    out = PiiRedact().apply(frame)
    assert out.reason is None
    assert out.frame.height == 3
    assert out.frame.columns == [*frame.columns, "pii_count", "pii_types"]
    assert out.frame.drop("text", "pii_count", "pii_types").equals(frame.drop("text"))
    assert out.frame["text"].to_list() == ["<EMAIL>", "plain", "<PHONE>"]
    assert frame["text"].to_list() == ["x@y.org", "plain", "212-555-1234"]  # input not mutated


def test_rows_keep_their_order_in_a_large_batch():
    texts = [
        f"row {i} mail user{i}@example.com" if i % 7 == 3 else f"row {i} 1987 155,221" for i in range(2000)
    ]
    out = run(texts)
    got = out.frame["text"].to_list()
    for i, t in enumerate(got):
        assert t == (f"row {i} mail <EMAIL>" if i % 7 == 3 else texts[i])
    assert out.counters["email"] == sum(1 for i in range(2000) if i % 7 == 3)


# --- properties -------------------------------------------------------------------------------

WORDS = ["the", "Zahlung", "café", "—", "(note)", "total:", "und", "价格", "ok.", "Mr.", "x", ";"]
prose = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
# (issuer prefix, length, grouping used when spaced)
CARD_KINDS = [
    ("4", 16, (4, 4, 4, 4)),
    ("4", 13, None),
    ("4", 19, (4, 4, 4, 4, 3)),
    ("51", 16, (4, 4, 4, 4)),
    ("55", 16, (4, 4, 4, 4)),
    ("2221", 16, (4, 4, 4, 4)),
    ("2720", 16, (4, 4, 4, 4)),
    ("34", 15, (4, 6, 5)),
    ("37", 15, (4, 6, 5)),
    ("6011", 16, (4, 4, 4, 4)),
    ("65", 16, (4, 4, 4, 4)),
    ("3528", 16, (4, 4, 4, 4)),
    ("36", 14, (4, 6, 4)),
    ("62", 16, (4, 4, 4, 4)),
]


def luhn_digit(body: str) -> str:
    for d in "0123456789":
        if luhn_valid(body + d):
            return d
    raise AssertionError(body)


@st.composite
def cards(draw, valid: bool = True) -> str:
    prefix, length, groups = draw(st.sampled_from(CARD_KINDS))
    rest = draw(st.text("0123456789", min_size=length - len(prefix) - 1, max_size=length - len(prefix) - 1))
    check = int(luhn_digit(prefix + rest))
    if not valid:
        check = (check + draw(st.integers(1, 9))) % 10
    number = prefix + rest + str(check)
    # an invalid 19-digit number spaced 4-4-4-4-3 could hold a valid 16-digit card: keep it whole
    sep = draw(st.sampled_from(["", " ", "-"])) if groups and (valid or length < 19) else ""
    if not sep:
        return number
    parts, pos = [], 0
    for g in groups:
        parts.append(number[pos : pos + g])
        pos += g
    return sep.join(parts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(left=prose, right=prose, card=cards(valid=True))
def test_valid_cards_in_prose_are_always_redacted(left, right, card):
    out = run([f"{left} {card} {right}"])
    assert out.frame["text"][0] == f"{left} <CREDIT_CARD> {right}"
    assert out.counters["credit_card"] == 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(left=prose, right=prose, card=cards(valid=False))
def test_invalid_cards_in_prose_are_never_redacted(left, right, card):
    text = f"{left} {card} {right}"
    out = run([text])
    assert out.frame["text"][0] == text
    assert out.frame["pii_count"][0] == 0


COUNTRIES = sorted(["DE", "GB", "FR", "NL", "NO", "BE", "IT", "ES", "CH", "PL", "MT", "SA"])


def _iban_lengths() -> dict[str, int]:
    from dataforge.text.pii import IBAN_LENGTHS

    return IBAN_LENGTHS


@st.composite
def ibans(draw, valid: bool = True) -> str:
    country = draw(st.sampled_from(COUNTRIES))
    n = _iban_lengths()[country] - 4
    bban = draw(st.text("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=n, max_size=n))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    if not valid:
        check = (check + draw(st.integers(1, 96))) % 97 or 97
    iban = f"{country}{check:02d}{bban}"
    if draw(st.booleans()):
        iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(left=prose, right=prose, iban=ibans(valid=True))
def test_valid_ibans_in_prose_are_redacted(left, right, iban):
    out = run([f"{left} {iban} {right}"])
    assert out.frame["text"][0] == f"{left} <IBAN> {right}"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(left=prose, right=prose, iban=ibans(valid=False))
def test_ibans_with_a_wrong_check_are_not_ibans(left, right, iban):
    out = run([f"{left} {iban} {right}"])
    assert out.counters["iban"] == 0


# Fragments that build PII, near-PII and glue between them.
FRAGMENTS = [
    "0", "1", "2", "4", "5", "9", "12", "44", "555", "1234", "4111", "0958", "2001", "db8",
    "192.168", ".1", "255", "-", "-", ".", ".", " ", " ", " ", ":", "::", "(", ")", "+", "@",
    "a", "x", "ext ", "DE89", "3704", "0044", "GB82", "WEST", "example.com", "mail", "é", "\n",
    "123-45-6789", "212-555-1234", "4111 1111 1111 1111", "+44 20 7946 0958", "10.0.0.1",
    "a@b.org", "DE89370400440532013000", "fe80::1:2",
]  # fmt: skip
messy = st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(messy, min_size=1, max_size=8))
def test_vectorized_path_matches_a_plain_python_scan(texts):
    out = run(texts)
    expected = [reference(t) for t in texts]
    assert out.frame["text"].to_list() == [e[0] for e in expected]
    assert out.frame["pii_count"].to_list() == [sum(e[1].values()) for e in expected]
    assert out.counters == {k: sum(e[1][k] for e in expected) for k in PII_TYPES}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(messy, min_size=1, max_size=6))
def test_redacting_twice_changes_nothing_more(texts):
    step = PiiRedact()
    once = step.apply(pl.DataFrame({"text": texts}))
    twice = step.apply(once.frame)
    assert twice.frame["text"].to_list() == once.frame["text"].to_list()
    assert twice.frame["pii_count"].sum() == 0
