import pytest

from aifactory_cli.units import format_duration, format_memory, parse_duration, parse_memory


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("02:00:00", 7200),
        ("1-12:00:00", 129600),
        ("90m", 5400),
        ("2h", 7200),
        ("1d", 86400),
        ("45s", 45),
        ("30:00", 1800),
        ("1-0", 86400),
        ("1-02:30", 95400),
        (15, 900),
        ("1.5h", 5400),
    ],
)
def test_parse_duration(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["2 hours", "", "0", "-5m", "1:70:00", "abc", "1--2"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(5400) == "01:30:00"
    assert format_duration(2 * 86400 + 3661) == "2-01:01:01"


@pytest.mark.parametrize(
    ("text", "mib"), [("60G", 61440), ("512M", 512), ("1T", 1048576), ("60GB", 61440), ("64GiB", 65536), (1024, 1024)]
)
def test_parse_memory(text: str | int, mib: int) -> None:
    assert parse_memory(text) == mib


def test_format_memory() -> None:
    assert format_memory(61440) == "60G"
    assert format_memory(1000) == "1000M"
    assert format_memory(1048576) == "1T"


@pytest.mark.parametrize("text", ["60 gigs", "G", "-1G", "0"])
def test_parse_memory_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_memory(text)
