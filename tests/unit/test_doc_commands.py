"""The docs test's extraction (tests/doc_commands.py) finds the documented commands (issue 14)."""

from __future__ import annotations

from pathlib import Path

from tests.doc_commands import all_commands, as_run, config_block, extract


def test_extraction_of_blocks_tables_and_exit_markers(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text `aifactory not-in-a-block` is prose\n"
        "```\naifactory submit examples/hello.yaml --wait   # a comment\n"
        "pip install . && aifactory sites list\n./tests/run\n```\n"
        "```yaml\nrun: aifactory submit x.yaml\n```\n"
        "```\naifactory submit examples/train.yaml --dry-run   # exits 2 on a machine without GPUs\n```\n"
        "| `submit SPEC [--site S]` | `aifactory submit examples/train.yaml --site lumi --wait` |\n"
        "| `aifactory logs JOB [--follow]` | usage, not an example |\n"
        "| `list` | `aifactory list --state FAILED` |\n"
    )
    found = extract(doc)
    assert [(c.line, c.text, c.expect, c.gpu_qualified) for c in found] == [
        (3, "aifactory submit examples/hello.yaml --wait", 0, False),
        (4, "aifactory sites list", 0, False),
        (11, "aifactory submit examples/train.yaml --dry-run", 2, True),
        (13, "aifactory submit examples/train.yaml --site lumi --wait", 0, False),
        (15, "aifactory list --state FAILED", 0, False),
    ]
    # a remote submit that waits runs as a dry run; local ones and the rest run as printed
    assert as_run(found[3]) == "aifactory submit examples/train.yaml --site lumi --dry-run"
    assert as_run(found[0]) == found[0].text


def test_the_docs_have_their_commands() -> None:
    texts = {c.text for c in all_commands()}
    # the two commands' install-and-run, and every command of the README's table
    assert "aifactory submit examples/hello.yaml --wait" in texts
    for command in ("submit", "render", "status", "list", "logs", "wait", "cancel", "fetch", "exec", "forward"):
        assert any(t.split()[1] == command for t in texts), command
    for command in ("rerun", "sync", "plan", "usage", "schema"):
        assert any(t.split()[1] == command for t in texts), command
    for sub in ("ls", "gc"):
        assert any(t.startswith(f"aifactory data {sub}") for t in texts), sub
    for sub in ("list", "show", "validate", "check", "add"):
        assert any(t.startswith(f"aifactory sites {sub}") for t in texts), sub
    assert any(c.file == "docs/ci.md" for c in all_commands())
    assert "account:" in (config_block() or "")
