"""`sites list / show / validate / add` and the site-name checks, in-process, in a temp
AIFACTORY_HOME (the `aif_home` fixture: tests/profiles on the search path, then the built-ins)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fakes import SITE, Session, fake_site

from aifactory_cli import paths
from aifactory_cli.errors import BadInput, NotFound, ProfileError
from aifactory_cli.service import profiles
from aifactory_cli.service.session import Service

REPO = Path(__file__).resolve().parents[2]
BUILTIN = sorted(p.stem for p in (REPO / "profiles").glob("*.yaml"))
DATA = REPO / "tests" / "data" / "slurm"


def test_known_sites_and_site_name_checks(aif_home: Path) -> None:
    assert profiles.known_sites() == sorted({*BUILTIN, "testbed", "local"})
    assert profiles.check_site_names(["lumi", "testbed", "lumi"], "--sites") == ["lumi", "testbed"]
    with pytest.raises(NotFound) as info:
        profiles.check_site_names(["lumi", "lumii"], "--sites")
    assert info.value.message == "unknown site 'lumii' in --sites" and info.value.hint == "did you mean 'lumi'?"
    with pytest.raises(NotFound) as info:
        profiles.check_site_names(["LUMI"], "--site")  # the lower-case name is suggested
    assert info.value.hint == "did you mean 'lumi'?"
    with pytest.raises(NotFound) as info:
        profiles.check_site_names(["zzzzzzzz"], "--site")
    assert (info.value.hint or "").startswith("known sites: deucalion, ")


def test_list_profiles_rows_and_broken_profiles(aif_home: Path, tmp_path: Path, monkeypatch) -> None:
    rows, broken = profiles.list_profiles()
    assert broken == [] and [r["name"] for r in rows] == profiles.known_sites()
    by_name = {r["name"]: r for r in rows}
    lumi = by_name["lumi"]
    assert (lumi["scheduler"], lumi["gpu_vendor"], lumi["gpu_model"], lumi["gpus_per_node"]) == (
        "slurm", "amd", "MI250X GCD", 8,
    )  # fmt: skip
    assert lumi["partitions"] == ["standard-g", "small-g", "dev-g", "standard", "small", "debug"]
    assert lumi["cpu_arch"] == "x86_64" and lumi["verified"] == "2026-11-22"
    assert lumi["file"] == str(REPO / "profiles" / "lumi.yaml")
    # a profile that extends another is listed from its own file, with what it inherits
    testbed = by_name["testbed"]
    assert testbed["file"] == str(REPO / "tests" / "profiles" / "testbed.yaml") and testbed["gpus_per_node"] == 8
    assert (lumi["source"], testbed["source"]) == ("built-in", "user")  # `sites list` marks user profiles
    local = by_name["local"]
    assert local["scheduler"] == "local" and local["gpu_model"] is None and local["partitions"] == []

    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "broken.yaml").write_text("version: 1\ndescription: no partitions\n")
    monkeypatch.setenv("AIFACTORY_PROFILES", f"{extra}:{REPO / 'tests' / 'profiles'}")
    rows, broken = profiles.list_profiles()
    assert [b["name"] for b in broken] == ["broken"] and "partition" in broken[0]["error"]
    assert "broken" not in {r["name"] for r in rows} and "lumi" in {r["name"] for r in rows}


def test_show_resolves_extends_and_says_where_it_comes_from(aif_home: Path) -> None:
    view = profiles.show("testbed")
    assert view.files == [str(REPO / "profiles" / "lumi.yaml"), str(REPO / "tests" / "profiles" / "testbed.yaml")]
    assert view.comments[0] == "site testbed: Loopback Slurm test bed that looks like a small LUMI (tests/testbed)"
    assert view.comments[1] == f"from: {view.files[1]} <- {view.files[0]}"
    assert "verified: 2026-11-22" in view.comments
    assert any(c.startswith("source: LUMI user guide, billing <https://") for c in view.comments)
    assert "note: --partition and --account are both mandatory on LUMI (no default partition)" in view.comments
    # merged: the test bed's overrides on top of LUMI's values
    data = yaml.safe_load(view.yaml)
    assert data == view.data
    assert data["ssh"]["host"] == "127.0.0.1" and data["ssh"]["port"] == 2222
    assert data["cores_per_node"] == 64 and data["partitions"]["small"]["max_nodes"] == 2
    assert data["partitions"]["small"]["billing"]["formula"] == "lumi_shared_cpu"  # inherited
    assert len(view.digest) == 64 and view.to_json() == {"site": data, "files": view.files, "digest": view.digest}
    assert profiles.show("testbed").digest == view.digest and profiles.show("lumi").digest != view.digest
    with pytest.raises(NotFound):
        profiles.show("nosuchsite")


def test_validate_renders_sample_jobs(aif_home: Path, tmp_path: Path) -> None:
    samples = {s["kind"]: s for s in profiles.validate(REPO / "profiles" / "lumi.yaml")}
    assert list(samples) == ["gpu", "cpu"]
    assert samples["gpu"]["partition"] == "standard-g" and samples["cpu"]["partition"] == "small"
    gpu = samples["gpu"]["directives"].split()
    assert "--gpus-per-node=8" in gpu and "--account=project_465000123" in gpu and "--cpus-per-task=7" in gpu
    assert "#SBATCH --partition=small" in samples["cpu"]["script"].splitlines()
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: lumi\npartitions: {small: {max_nodes: lots}}\n")
    with pytest.raises(ProfileError, match="max_nodes"):
        profiles.validate(bad)


def test_add_site_from_flags_extending_a_built_in(aif_home: Path) -> None:
    out = profiles.add_site(
        Service(),  # connects nowhere without from_live
        "mysite",
        extends="lumi",
        host="login.example.org",
        user="me",
        gpu_vendor="nvidia",
        gpu_model="H100",
        gpus_per_node=4,
        account_required=False,
    )
    target = paths.user_profiles_dir() / "mysite.yaml"
    assert out["file"] == str(target) and target.is_file()
    text = target.read_text()
    assert text.startswith("# Scaffolded by `aifactory sites add`")
    written = yaml.safe_load(text)
    assert written == out["profile"]
    assert written["extends"] == "lumi" and written["ssh"] == {"host": "login.example.org", "user": "me"}
    assert written["gpu"] == {"vendor": "nvidia", "model": "H100", "per_node": 4}
    assert written["account"] == {"required": False}
    gpu = next(s for s in out["samples"] if s["kind"] == "gpu")
    assert "--gpus-per-node=4" in gpu["directives"].split()
    # it is a site now, with LUMI's partitions
    assert "mysite" in profiles.known_sites()
    assert profiles.show("mysite").data["gpu"]["model"] == "H100"
    assert [p.name for p in target.parent.iterdir()] == ["mysite.yaml"]  # no temporary dir left

    with pytest.raises(BadInput, match="exists"):
        profiles.add_site(Service(), "mysite", extends="lumi")
    again = profiles.add_site(
        Service(),
        "mysite",
        extends="lumi",
        host="other.example.org",
        force=True,
    )
    assert yaml.safe_load(target.read_text())["ssh"] == {"host": "other.example.org"} == again["profile"]["ssh"]


def test_add_site_refuses_what_would_not_work_and_writes_nothing(aif_home: Path) -> None:
    target = paths.user_profiles_dir() / "mysite.yaml"
    with pytest.raises(BadInput, match="is not a site name"):
        profiles.add_site(Service(), "My Site", extends="lumi")
    with pytest.raises(BadInput, match="no other profile named mysite"):
        profiles.add_site(Service(), "mysite", extends="mysite")
    with pytest.raises(ProfileError) as info:  # no partitions from flags alone
        profiles.add_site(Service(), "mysite", host="login.example.org")
    assert (info.value.hint or "").endswith(f"{target} was not written; fix the flags and rerun")
    assert not target.exists() and [p.name for p in target.parent.iterdir()] == []

    # a failed --force leaves the earlier profile as it was
    profiles.add_site(Service(), "mysite", extends="lumi", host="keep.example.org")
    before = target.read_text()
    with pytest.raises(ProfileError) as info:
        profiles.add_site(Service(), "mysite", host="new.example.org", force=True)
    assert f"{target} was left as it was" in (info.value.hint or "")
    assert target.read_text() == before

    # extending a built-in of the same name is allowed: the user's file overrides it
    out = profiles.add_site(Service(), "lumi", extends="lumi", user="me")
    assert out["profile"]["extends"] == "lumi"
    assert profiles.show("lumi").files[-1] == str(paths.user_profiles_dir() / "lumi.yaml")


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    return fake_site(tmp_path, monkeypatch)


def test_add_site_from_live_reads_scontrol_on_the_site(session: Session) -> None:
    scontrol = session.fake.slurm.bin / "scontrol"  # the recorded test-bed output
    scontrol.write_text(
        "#!/bin/sh\n"
        f'case "$2" in partition) cat {DATA / "scontrol_partitions.txt"};; node) cat {DATA / "scontrol_nodes.txt"};;'
        " *) exit 1;; esac\n"
    )
    scontrol.chmod(0o755)
    out = profiles.add_site(session(), "copied", from_live=SITE, account_required=True)
    data = out["profile"]
    assert data["sources"][0]["title"].startswith(f"scontrol show partition/node on {SITE}, ")
    assert data["ssh"]["host"] == "fake.invalid"  # from the live site's profile
    assert set(data["partitions"]) >= {"small", "small-g", "standard-g"}
    assert data["gpu"]["vendor"] == "amd" and data["gpu"]["per_node"] == max(
        p.get("gpus_per_node", 0) for p in data["partitions"].values()
    )
    assert len(session.fake.commands) == 1 and "scontrol show node --oneliner" in session.fake.commands[0]
    assert {s["kind"] for s in out["samples"]} == {"gpu", "cpu"}

    scontrol.write_text("#!/bin/sh\necho 'slurm_load_partitions: Unable to contact slurm controller' >&2\nexit 1\n")
    with pytest.raises(Exception, match=f"scontrol failed on {SITE}"):
        profiles.add_site(session(), "copied2", from_live=SITE)
    assert not (paths.user_profiles_dir() / "copied2.yaml").exists()
