"""Report helpers shared by every command."""

from __future__ import annotations

from dataforge.report import truncated_message


def test_truncated_message_names_each_file_once_and_how_to_accept():
    files = ["b.jsonl.gz", None, "a.jsonl.zst", "b.jsonl.gz", ""]
    msg = truncated_message(files, accept="--max-reject-rate 1 accepts this")
    assert msg.startswith("2 input file(s) end early (truncated or corrupt): a.jsonl.zst, b.jsonl.gz;")
    assert msg.endswith("(--max-reject-rate 1 accepts this)")
    assert "see" not in msg


def test_truncated_message_lists_five_files_then_an_ellipsis_and_where_to_look():
    files = [f"f{i}.jsonl.gz" for i in range(7)]
    msg = truncated_message(files, accept="x", see="out/rejects")
    assert msg.startswith("7 input file(s)")
    assert "f4.jsonl.gz ...;" in msg and "f5.jsonl.gz" not in msg
    assert msg.endswith("; see out/rejects")


def test_truncated_message_without_file_names_says_some():
    assert truncated_message([None], accept="x").startswith("some input file(s) end early")
