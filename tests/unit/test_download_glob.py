"""`download:` globs (jobs/staging.match_downloads) over a tree of job-dir files: `*`, `?` and
`[...]` stay inside one directory, `**` as a whole path part spans any number of directories
(zero included), dotfiles match like any other name, and braces are not expanded."""

from __future__ import annotations

import pytest

from aifactory_cli.jobs.staging import match_downloads

TREE = [
    ".env",
    "exit_code",
    "out/.cache/a.txt",
    "out/.hidden",
    "out/a.txt",
    "out/b.txt",
    "out/c.txt",
    "out/sub/a.txt",
    "out/sub/c.log",
    "out/sub/deep/b.txt",
    "out/{a,b}.txt",
    "outx/a.txt",
    "stdout.log",
    "top.txt",
]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        # a character class after `**`: the case the hand-written glob matched nothing for
        ("out/**/[ab].txt", ["out/.cache/a.txt", "out/a.txt", "out/b.txt", "out/sub/a.txt", "out/sub/deep/b.txt"]),
        (
            "**/[ab].txt",
            ["out/.cache/a.txt", "out/a.txt", "out/b.txt", "out/sub/a.txt", "out/sub/deep/b.txt", "outx/a.txt"],
        ),
        ("out/**/?.log", ["out/sub/c.log"]),
        # `**` at the end: everything below, dotfiles and dot dirs included; not a sibling with the same prefix
        (
            "out/**",
            [
                "out/.cache/a.txt",
                "out/.hidden",
                "out/a.txt",
                "out/b.txt",
                "out/c.txt",
                "out/sub/a.txt",
                "out/sub/c.log",
                "out/sub/deep/b.txt",
                "out/{a,b}.txt",
            ],
        ),
        ("**", TREE),
        # `**/` spans zero directories too
        ("**/*.log", ["out/sub/c.log", "stdout.log"]),
        ("out/**/a.txt", ["out/.cache/a.txt", "out/a.txt", "out/sub/a.txt"]),
        # one directory only
        ("*.txt", ["top.txt"]),
        ("out/*", ["out/.hidden", "out/a.txt", "out/b.txt", "out/c.txt", "out/{a,b}.txt"]),
        ("out/[!a].txt", ["out/b.txt", "out/c.txt"]),
        ("*/a.txt", ["out/a.txt", "outx/a.txt"]),
        # dotfiles: `*` matches a leading dot, as it always has
        ("*", [".env", "exit_code", "stdout.log", "top.txt"]),
        (".*", [".env"]),
        # no brace expansion (not documented): the braces are literal
        ("out/{a,b}.txt", ["out/{a,b}.txt"]),
        ("exit_code", ["exit_code"]),
        ("nosuch/**", []),
    ],
)
def test_download_globs(pattern: str, expected: list[str]) -> None:
    assert match_downloads(TREE, [pattern]) == expected


def test_several_patterns_list_each_file_once_in_order() -> None:
    assert match_downloads(TREE, ["out/*.txt", "**/a.txt"]) == [
        "out/.cache/a.txt",
        "out/a.txt",
        "out/b.txt",
        "out/c.txt",
        "out/sub/a.txt",
        "out/{a,b}.txt",
        "outx/a.txt",
    ]


def test_matching_is_globmatchs_own_for_many_names_and_patterns() -> None:
    """The patterns are compiled once (wcmatch's translate): the same answers as globmatch per name."""
    import random

    from wcmatch import glob

    rng = random.Random(7)
    parts = ["a", "b.txt", ".hidden", "out", "x y", "[1]", "ckpt-10.pt", "..", "a\nb"]
    names = sorted({"/".join(rng.choice(parts) for _ in range(rng.randint(1, 4))) for _ in range(3000)})
    for patterns in (["**"], ["out/**"], ["*.txt"], ["**/*.pt", "out/*"], ["[ab]*", "**/.hidden"], ["\\[1]/**"]):
        flags = glob.GLOBSTAR | glob.DOTGLOB | glob.FORCEUNIX
        expected = [n for n in names if glob.globmatch(n, patterns, flags=flags)]
        assert match_downloads(names, patterns) == expected, patterns
    assert match_downloads(names, []) == []
    assert len(names) > 1000
