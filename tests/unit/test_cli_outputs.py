"""Output paths and option values that cannot work are bad input (exit 2), found before anything is
submitted, waited for or downloaded; `sites add` never leaves a broken profile behind. Through the
real CLI in a subprocess, on the embedded `local` site."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES

HELLO = str(EXAMPLES / "hello.yaml")


def _clean(r, code: int, *words: str) -> None:
    """Exit `code`, every word in the message, and no traceback or internal error."""
    assert r.code == code, (r.code, r.stdout, r.stderr)
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr


def _job_ids(cli) -> list[str]:
    r = cli("list", "--json")
    assert r.code == 0, r.stderr
    return [j["id"] for j in json.loads(r.stdout)["jobs"]]


@pytest.fixture
def afile(tmp_path: Path) -> Path:
    """A regular file where a directory is expected."""
    path = tmp_path / "afile"
    path.write_text("keep me\n")
    return path


@pytest.fixture
def done_job(cli) -> str:
    r = cli("submit", HELLO, "--wait", "--json")
    assert r.code == 0, r.stderr
    return json.loads(r.stdout)["jobs"][0]["id"]


# --- 1. --job-id-file and --junit are checked before submitting or waiting ----------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["--job-id-file", "{afile}/id"], ["--job-id-file", "afile is not a directory"]),
        (["--job-id-file", "{tmp}/nodir/id"], ["--job-id-file", "nodir does not exist", "mkdir -p"]),
        (["--job-id-file", "{tmp}"], ["--job-id-file", "is a directory"]),
        (["--wait", "--junit", "{tmp}"], ["--junit", "is a directory"]),
        (["--wait", "--junit", "{afile}/report.xml"], ["--junit", "afile is not a directory"]),
    ],
    ids=["id-file-under-a-file", "id-file-no-dir", "id-file-is-dir", "junit-is-dir", "junit-under-a-file"],
)
def test_submit_rejects_unwritable_output_before_submitting(cli, tmp_path: Path, afile: Path, args, words) -> None:
    argv = [a.format(afile=afile, tmp=tmp_path) for a in args]
    r = cli("submit", HELLO, *argv)
    _clean(r, 2, *words, "hint:")
    assert "submitted" not in r.stderr
    assert _job_ids(cli) == []
    assert afile.read_text() == "keep me\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to make the write fail")
def test_job_id_file_write_failure_after_submit_names_the_job(cli) -> None:
    r = cli("submit", HELLO, "--job-id-file", "/dev/full")
    ids = _job_ids(cli)
    assert len(ids) == 1  # it was submitted: the message must say so, with the id
    _clean(r, 3, f"submitted {ids[0]}", "could not write --job-id-file /dev/full", f"aifactory status {ids[0]}")


def test_junit_dirs_are_made_but_not_through_a_file(cli, tmp_path: Path, afile: Path) -> None:
    r = cli("submit", HELLO, "--wait", "--junit", str(afile / "reports" / "junit.xml"))
    _clean(r, 2, "--junit", "afile is not a directory")
    assert _job_ids(cli) == []
    # where they can be written, they still are; --junit makes its missing directories
    id_file, report = tmp_path / "id", tmp_path / "reports" / "new" / "junit.xml"
    r = cli("submit", HELLO, "--wait", "--job-id-file", str(id_file), "--junit", str(report))
    assert r.code == 0, r.stderr
    assert id_file.read_text().split() == _job_ids(cli)
    assert "<testsuites>" in report.read_text()


@pytest.mark.parametrize(
    "path, words",
    [("{tmp}", ["is a directory"]), ("{afile}/report.xml", ["afile is not a directory"]), ("", ["is empty"])],
    ids=["dir", "under-a-file", "empty"],
)
def test_wait_rejects_unwritable_junit_before_waiting(cli, tmp_path: Path, afile: Path, done_job: str, path, words):
    r = cli("wait", done_job, "--junit", path.format(afile=afile, tmp=tmp_path))
    _clean(r, 2, "--junit", *words)
    assert done_job not in r.stdout  # no results table: it did not wait
    assert afile.read_text() == "keep me\n"


# --- 2. fetch --dest --------------------------------------------------------------------------


def test_fetch_dest_that_is_a_file(cli, afile: Path, done_job: str) -> None:
    r = cli("fetch", done_job, "--dest", str(afile), "--pattern", "*.log")
    _clean(r, 2, "--dest", "is a file, not a directory", "hint:")
    assert afile.read_text() == "keep me\n"
    r = cli("fetch", done_job, "--dest", str(afile / "sub"), "--pattern", "*.log")
    _clean(r, 2, "--dest", "is a file, not a directory")


# --- 3. an explicitly empty --site / --sites ---------------------------------------------------


@pytest.mark.parametrize(
    "args, option",
    [
        (["submit", HELLO, "--site", ""], "--site"),
        (["submit", HELLO, "-s", " "], "--site"),
        (["submit", HELLO, "--site", "auto", "--sites", ""], "--sites"),
        (["render", HELLO, "--site", ""], "--site"),
        (["list", "--site", ""], "--site"),
        (["sync", "--site", ""], "--site"),
        (["usage", "--site", ""], "--site"),
        (["plan", HELLO, "--sites", ""], "--sites"),
    ],
    ids=["submit", "submit-blank", "submit-auto-sites", "render", "list", "sync", "usage", "plan"],
)
def test_empty_site_option_is_bad_input(cli, args, option) -> None:
    r = cli(*args)
    _clean(r, 2, f"{option} is empty", "hint:")
    assert r.stdout == ""
    assert _job_ids(cli) == []


def test_empty_site_list_entry_is_bad_input(cli) -> None:
    r = cli("plan", HELLO, "--sites", "local,")
    _clean(r, 2, "--sites 'local,' has an empty site name")
    # an empty AIFACTORY_SITE is not an option given: it means the default site, as before
    r = cli("render", HELLO, env={"AIFACTORY_SITE": ""})
    assert r.code == 0, r.stderr


# --- 4. sites add writes nothing unless the profile is valid ------------------------------------


def _profiles(aif_home: Path) -> list[str]:
    d = aif_home / "profiles"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_sites_add_invalid_leaves_no_file_and_keeps_the_builtin(cli, aif_home: Path) -> None:
    r = cli("sites", "add", "lumi")
    _clean(r, 2, "needs at least one partition", "was not written")
    assert _profiles(aif_home) == []  # no lumi.yaml, and no temp file left over
    show = cli("sites", "show", "lumi", "--json")
    assert show.code == 0, show.stderr
    assert "scaffolded" not in json.loads(show.stdout)["site"]["description"]
    listed = json.loads(cli("sites", "list", "--json").stdout)
    assert listed["invalid"] == [] and "lumi" in [s["name"] for s in listed["sites"]]


def test_sites_add_unknown_extends_leaves_no_file(cli, aif_home: Path) -> None:
    r = cli("sites", "add", "mylumi3", "--extends", "nosuch")
    _clean(r, 2, "extends 'nosuch'", "was not written")
    assert _profiles(aif_home) == []
    _clean(cli("sites", "show", "mylumi3"), 4, "unknown site 'mylumi3'")


def test_sites_add_force_keeps_a_working_profile_when_the_new_one_is_invalid(cli, aif_home: Path) -> None:
    assert cli("sites", "add", "mylumi", "--extends", "lumi").code == 0
    target = aif_home / "profiles" / "mylumi.yaml"
    before = target.read_text()
    r = cli("sites", "add", "mylumi", "--extends", "nosuch", "--force")
    _clean(r, 2, "extends 'nosuch'", "left as it was")
    assert target.read_text() == before
    assert _profiles(aif_home) == ["mylumi.yaml"]
    assert cli("sites", "show", "mylumi").code == 0
    # and a valid --force still replaces it
    assert cli("sites", "add", "mylumi", "--extends", "lumi", "--gpus-per-node", "4", "--force").code == 0
    assert "per_node: 4" in target.read_text()


def test_sites_add_that_would_extend_only_itself_is_refused(cli, aif_home: Path) -> None:
    assert cli("sites", "add", "foo", "--extends", "lumi").code == 0
    target = aif_home / "profiles" / "foo.yaml"
    before = target.read_text()
    r = cli("sites", "add", "foo", "--extends", "foo", "--force")  # no other profile named foo
    _clean(r, 2, "--extends foo: there is no other profile named foo")
    assert target.read_text() == before and cli("sites", "show", "foo").code == 0
    # a user profile that extends the built-in of its own name is fine
    assert cli("sites", "add", "lumi", "--extends", "lumi").code == 0
    assert cli("sites", "show", "lumi").code == 0


# --- 5. fetch --pattern message, list --limit ----------------------------------------------------


def test_fetch_reports_the_pattern_that_matched_nothing(cli, tmp_path: Path) -> None:
    spec = tmp_path / "out.yaml"
    spec.write_text('download: ["out/*"]\nrun: mkdir -p out; echo x > out/a.txt\n')
    r = cli("submit", str(spec), "--wait", "--json")
    assert r.code == 0, r.stderr
    job = json.loads(r.stdout)["jobs"][0]["id"]
    r = cli("fetch", job, "--dest", str(tmp_path / "got"), "--pattern", "nomatch*")
    assert r.code == 0, r.stderr
    assert "match nomatch*" in r.stderr and "out/*" not in r.stderr


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_list_limit_below_one_is_bad_input(cli, done_job: str, limit: str) -> None:
    r = cli("list", "--limit", limit, "--json")
    _clean(r, 2, "--limit")
    assert r.stdout == ""


# --- 6. --prefer: one option type for plan and submit --site auto --------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["plan", HELLO, "--sites", "local", "--prefer", "bogus"],
        ["submit", HELLO, "--site", "auto", "--sites", "local", "--prefer", "bogus"],
        ["submit", HELLO, "--site", "auto", "--sites", "local", "--prefer", "bogus", "--dry-run"],
    ],
    ids=["plan", "submit-auto", "submit-auto-dry-run"],
)
def test_unknown_prefer_is_bad_input_before_anything_is_submitted(cli, args) -> None:
    r = cli(*args)
    _clean(r, 2, "--prefer 'bogus'", "use --prefer start or --prefer cost")
    assert r.stdout == ""
    assert _job_ids(cli) == []
