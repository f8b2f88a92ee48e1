"""A spec's `data:` on the test bed as LUMI (`lumi-bed`), through the CLI: stored once in the site's
store, linked read-only into the job dir; an unchanged dataset costs no bytes and no disk at the next
submit; `data gc` keeps what any job dir on the site links to (submitted from anywhere) and recent
parts; two submissions racing on new data both succeed;
another member of the project cannot change what a job reads."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.real.bedjobs import aif, bed_env
from tests.real.conftest import TESTBED_ACCOUNT, TESTBED_USER

pytestmark = pytest.mark.real

SCRATCH = Path(f"/scratch/{TESTBED_ACCOUNT}/{TESTBED_USER}")
BIG = 24 * 1024 * 1024  # over the store's LARGE: sent on its own, resumable


@pytest.fixture
def bed(tmp_path: Path):
    """An environment whose `lumi-bed` keeps its data store in a dir of this test alone (removed after)."""
    store = SCRATCH / f"aif-data-test-{secrets.token_hex(4)}"
    env = bed_env(tmp_path)
    env["AIFACTORY_ACCOUNT"] = TESTBED_ACCOUNT
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "datab.yaml").write_text(f"extends: lumi-bed\ndata_dir: {store}\n")
    env["AIFACTORY_PROFILES"] = f"{profiles}{os.pathsep}{env['AIFACTORY_PROFILES']}"
    yield env, store
    subprocess.run(["chmod", "-R", "u+w", str(store)], check=False, capture_output=True)
    shutil.rmtree(store, ignore_errors=True)


def _spec(root: Path, big: bytes, name: str = "datajob") -> Path:
    ds = root / "ds"
    ds.mkdir(parents=True, exist_ok=True)
    (ds / "big.bin").write_bytes(big)
    for i in range(20):
        (ds / f"s{i}.txt").write_text(f"row {i}\n")
    spec = root / "job.yaml"
    spec.write_text(
        f"name: {name}\nresources:\n  time: 5m\ndata:\n  - ds\nrun: |\n"
        "  sha256sum ds/big.bin\n  cat ds/s7.txt\n"
        '  if echo x > ds/s7.txt 2>/dev/null; then echo "WROTE"; else echo "write refused"; fi\n'
    )
    return spec


def _submit(env: dict[str, str], spec: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    r = aif(["submit", str(spec), "--site", "datab", "--json", *extra], env, spec.parent, timeout=180)
    job = json.loads(r.stdout)["jobs"][0] if r.returncode == 0 else {}
    return r, job


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def test_data_is_stored_once_linked_read_only_and_not_sent_again(bed, tmp_path: Path) -> None:
    env, store = bed
    big = os.urandom(BIG)
    spec = _spec(tmp_path / "spec", big)
    r, job = _submit(env, spec, "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    assert job["state"] == "COMPLETED", job
    assert "21 file(s), 21 sent" in r.stderr, r.stderr
    out = (Path(job["workdir"]) / "stdout.log").read_text()
    assert hashlib.sha256(big).hexdigest() in out and "row 7" in out and "write refused" in out, out
    # the data: dir is one link to a tree of hard links to the store's files, all read-only
    link = Path(job["workdir"]) / "ds"
    assert link.is_symlink() and os.readlink(link).startswith(f"{os.path.realpath(store)}/trees/")
    big_sum = hashlib.sha256(big).hexdigest()
    assert (link / "big.bin").stat().st_ino == (store / "sha256" / big_sum[:2] / big_sum).stat().st_ino
    assert oct((link / "big.bin").stat().st_mode & 0o777) == "0o400"
    assert oct(link.stat().st_mode & 0o777) == "0o500"
    assert oct(store.stat().st_mode & 0o777) == "0o700"
    assert "1 dataset tree(s) made" in r.stderr, r.stderr
    assert {k: job["data"][k] for k in ("files", "sent_files", "stored_already", "trees", "trees_made")} == {
        "files": 21,
        "sent_files": 21,
        "stored_already": 0,
        "trees": 1,
        "trees_made": 1,
    }, job
    assert job["data"]["sent_bytes"] == BIG + sum(len(f"row {i}\n") for i in range(20))

    used = _du(store)
    _age(store)
    r2, job2 = _submit(env, spec, "--wait", "--timeout", "120")
    assert r2.returncode == 0, r2.stderr
    # the tree the probe found is marked as just used (gc keeps it, and the files it links, while the
    # job may be about to link it); its files were not even looked up
    (tree,) = (store / "trees").iterdir()
    assert time.time() - tree.stat().st_mtime < 600
    assert all(time.time() - p.stat().st_mtime > 3600 for p in (store / "sha256").rglob("*") if p.is_file())
    listing = json.loads(aif(["data", "ls", "--site", "datab", "--json"], env, tmp_path, 120).stdout)["stores"][0]
    assert [t["recent"] for t in listing["trees"]] == [True] and listing["trees"][0]["files"] == 21
    assert _gc(env, tmp_path) == set()  # the old files are kept: a recent tree links them
    assert "0 sent (0.0 MB), 21 already in the site's store" in r2.stderr, r2.stderr
    assert _du(store) == used  # no byte more on the site's store
    assert _du(Path(job2["workdir"])) < 200_000  # links and logs, not 24 MiB
    assert os.readlink(Path(job2["workdir"]) / "ds") == os.readlink(link)  # the same tree, not made again
    assert "dataset tree(s) made" not in r2.stderr, r2.stderr
    assert (job2["data"]["sent_bytes"], job2["data"]["stored_already"], job2["data"]["trees_made"]) == (0, 21, 0)
    assert hashlib.sha256(big).hexdigest() in (Path(job2["workdir"]) / "stdout.log").read_text()


def _gc(env: dict[str, str], cwd: Path, *extra: str) -> set[str]:
    r = aif(["data", "gc", "--site", "datab", "--json", *extra], env, cwd, 120)
    assert r.returncode == 0, r.stderr
    return {e["sha256"] for e in json.loads(r.stdout)["stores"][0]["freed"]}


def _age(store: Path) -> None:
    """As if the store's entries were stored (or last found by a submission) two hours ago."""
    old = time.time() - 2 * 3600
    for path in (store / "sha256").rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))
    for tree in (store / "trees").iterdir():
        os.utime(tree, (old, old))


def _rm_jobdir(workdir: str) -> None:
    subprocess.run(["chmod", "-R", "u+w", workdir], check=False, capture_output=True)
    shutil.rmtree(workdir)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_gc_keeps_what_a_job_dir_on_the_site_links_to_whoever_submitted_it(bed, tmp_path: Path) -> None:
    env, store = bed
    big_a, big_b = os.urandom(BIG), os.urandom(BIG)
    r, job = _submit(env, _spec(tmp_path / "a", big_a), "--wait", "--timeout", "120")
    assert r.returncode == 0 and job["state"] == "COMPLETED", r.stderr
    # a job submitted from another machine (another AIFACTORY_HOME): 19 small files shared with `job`
    other_spec = _spec(tmp_path / "b", big_b, name="other")
    (tmp_path / "b" / "ds" / "s7.txt").write_text("row 7 elsewhere\n")
    r, other_job = _submit(dict(env, AIFACTORY_HOME=str(tmp_path / "home2")), other_spec)
    assert r.returncode == 0, r.stderr
    only_a = {_sha(big_a), _sha(b"row 7\n")}
    only_b = {_sha(big_b), _sha(b"row 7 elsewhere\n")}

    # gc from a fresh AIFACTORY_HOME, where neither job is known: the site says both dirs link to data
    fresh = dict(env, AIFACTORY_HOME=str(tmp_path / "home3"))
    (view,) = json.loads(aif(["data", "ls", "--site", "datab", "--json"], fresh, tmp_path, 120).stdout)["stores"]
    assert len(view["entries"]) == 23 and all(e["in_use"] and not e["jobs"] for e in view["entries"])
    dirs = {e["sha256"]: e["site_dirs"] for e in view["entries"]}
    assert all(dirs[h] == [job["workdir"]] for h in only_a) and all(dirs[h] == [other_job["workdir"]] for h in only_b)
    assert sum(d == sorted([job["workdir"], other_job["workdir"]]) for d in dirs.values()) == 19
    before = _du(store)
    assert _gc(fresh, tmp_path) == set() and _gc(fresh, tmp_path, "--ended") == set()  # unknown dirs: live
    assert _du(store) == before

    # the home that submitted `job` (ended): --ended frees what only its dir links to, not the shared
    # files; not while a submission stored or found them in the last hour (a job may be linking them)
    assert _gc(env, tmp_path) == set() and _gc(env, tmp_path, "--ended") == set()
    _age(store)
    assert _gc(env, tmp_path, "--ended", "--dry-run") == only_a

    # once a job dir is gone, what only it linked to is freed, from the fresh home too: its tree, and
    # of its files those no other tree links (the 19 shared stay: `job`'s tree links them)
    _rm_jobdir(other_job["workdir"])
    assert _gc(fresh, tmp_path) == only_b
    assert len(list((store / "trees").iterdir())) == 1
    assert _gc(fresh, tmp_path, "--ended") == set()  # not known there to have ended
    # from the home that knows `job` ended: its tree and all its files
    assert _gc(env, tmp_path, "--ended") == only_a | {_sha(f"row {i}\n".encode()) for i in range(20) if i != 7}
    assert not any((store / "sha256").rglob("*[0-9a-f]")) and not any((store / "trees").iterdir())


def test_gc_keeps_a_part_changed_recently(bed, tmp_path: Path) -> None:
    """A tmp/ part changed in the last hour may be another submission's upload in progress: kept, and said."""
    env, store = bed
    r, _ = _submit(env, _spec(tmp_path / "a", os.urandom(1000)))
    assert r.returncode == 0, r.stderr
    part = store / "tmp" / f"{'e' * 64}.part"
    part.write_bytes(b"x" * 4096)
    out = aif(["data", "gc", "--site", "datab", "--json"], env, tmp_path, 120)
    assert out.returncode == 0, out.stderr
    (view,) = json.loads(out.stdout)["stores"]
    assert view["busy"] == {part.name: 4096} and view["freed_leftovers"] == {} and view["busy_minutes"] == 60
    assert part.read_bytes() == b"x" * 4096
    text = aif(["data", "gc", "--site", "datab"], env, tmp_path, 120)
    assert "1 part(s) of transfers changed in the last 60 min" in text.stderr + text.stdout, text.stderr
    assert part.exists()


def test_two_submissions_racing_on_new_data_both_succeed(bed, tmp_path: Path) -> None:
    env, _store = bed
    big = os.urandom(BIG)
    specs = [_spec(tmp_path / f"r{i}", big, name=f"race{i}") for i in range(2)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda s: _submit(env, s, "--wait", "--timeout", "150"), specs))
    for r, job in results:
        assert r.returncode == 0, r.stderr
        assert job["state"] == "COMPLETED", job
        assert hashlib.sha256(big).hexdigest() in (Path(job["workdir"]) / "stdout.log").read_text()


def test_another_project_member_cannot_change_what_a_job_reads(bed, tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as a second user")
    env, store = bed
    r, job = _submit(env, _spec(tmp_path / "spec", os.urandom(1000)), "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    target = os.path.realpath(Path(job["workdir"]) / "ds" / "s7.txt")
    gid = grp.getgrnam(TESTBED_USER).gr_gid  # the project's group, as a second member of it has
    as_other = ["setpriv", "--reuid=65534", f"--regid={gid}", "--clear-groups", "sh", "-c"]
    for attempt in (f"echo evil > '{target}'", f"rm -f '{target}'", f"ls '{store}/sha256'"):
        tried = subprocess.run([*as_other, attempt], capture_output=True, text=True)
        assert tried.returncode != 0 and "Permission denied" in tried.stderr, (attempt, tried)
    assert Path(target).read_text() == "row 7\n"


# the CLI, with the small files' unpacked stream lost on the site between the send and the job's submission
_LOSE_THE_ATTEMPT = """
import subprocess, sys
from aifactory_cli.backends import datastore
sent_by = datastore.DataStore.send
def send(self, data_dir, *args, **kwargs):
    sent = sent_by(self, data_dir, *args, **kwargs)
    assert sent.commit, "the stream arrived whole: its commit is left for the submission"
    subprocess.run(["sh", "-c", f"chmod -R u+w {data_dir}/tmp/t.* && rm -rf {data_dir}/tmp/t.*"], check=True)
    return sent
datastore.DataStore.send = send
from aifactory_cli.cli import main
sys.argv = ["aifactory", *sys.argv[1:]]
main()
"""


def test_the_store_commit_rides_on_the_submission_and_its_failure_queues_nothing(bed, tmp_path: Path) -> None:
    """The small files' commit runs first in the job's submit command (one round trip less): when it
    fails (here: their unpacked stream was lost on the site), the chain stops before the job dir and
    sbatch: exit 3 naming it, no job in Slurm or in the list, no job dir; the next submit sends the
    small files again (the large one, stored on its own, is not)."""
    env, store = bed
    name = f"lost{secrets.token_hex(4)}"  # this test's own: the bed's job dirs outlive a run
    spec = _spec(tmp_path / "spec", os.urandom(BIG), name=name)
    r = subprocess.run(
        [sys.executable, "-c", _LOSE_THE_ATTEMPT, "submit", str(spec), "--site", "datab", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(spec.parent),
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 3, r.stderr
    assert f"the data sent were not moved into the store {store}: the unpacked files are gone" in r.stderr
    assert "nothing was submitted" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(aif(["list", "--json"], env, tmp_path, timeout=60).stdout)["jobs"] == []
    queued = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True)
    assert queued.returncode == 0 and queued.stdout.strip() == ""
    assert not list((SCRATCH / "aifactory").glob(f"{name}-*"))
    again, job = _submit(env, spec, "--wait", "--timeout", "120")
    assert again.returncode == 0, again.stderr
    assert (job["state"], job["data"]["sent_files"], job["data"]["stored_already"]) == ("COMPLETED", 20, 1)
    assert "row 7" in (Path(job["workdir"]) / "stdout.log").read_text()


def test_a_cut_upload_is_exit_3_and_the_next_submit_resumes_inside_the_file(bed, tmp_path: Path) -> None:
    from tests.real.conftest import TESTBED_CLIENT
    from tests.real.faultproxy import FaultProxy

    env, store = bed
    size = 256 * 1024 * 1024
    big = os.urandom(size)
    spec = _spec(tmp_path / "spec", big)
    proxy = FaultProxy(("127.0.0.1", 2222))
    try:
        pin = (TESTBED_CLIENT / "host_fingerprint").read_text().strip()
        (tmp_path / "known_hosts").write_text("")
        (tmp_path / "profiles" / "datacut.yaml").write_text(
            f"extends: datab\nssh: {{port: {proxy.port}, known_hosts: {tmp_path / 'known_hosts'}, "
            f"host_key_fingerprints: ['{pin}']}}\n"
        )
        proc = subprocess.Popen(
            [*aif_cmd(), "submit", str(spec), "--site", "datacut"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        parts = store / "tmp"
        deadline = time.time() + 120
        while time.time() < deadline:  # cut at about half of the file
            if any(p.stat().st_size > size // 2 for p in parts.glob("*.part") if p.exists()):
                break
            time.sleep(0.01)
        else:
            proc.kill()
            pytest.fail(f"the upload never reached half: {proc.communicate()}")
        proxy.cut()
        _out, err = proc.communicate(timeout=120)
    finally:
        proxy.close()
    assert proc.returncode == 3, err
    assert "Traceback" not in err and "internal error" not in err
    assert "ds/big.bin is kept in part on the site" in err, err
    (part,) = parts.glob("*.part")
    kept = part.stat().st_size
    assert 0 < kept < size
    r, job = _submit(env, spec, "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    assert "1 resumed" in r.stderr, r.stderr
    # over ownmaster.py's 64 MiB, with a pinned host key: an OpenSSH master of aifactory's own, cut
    # through the proxy like a paramiko connection (tests/real/test_fetch_resume_real.py has paramiko's)
    assert "via an OpenSSH master of aifactory's own" in r.stderr, r.stderr
    sent_mb = float(r.stderr.split(" sent (")[1].split(" MB")[0])
    assert sent_mb * 1e6 <= size - kept + 1e6, (sent_mb, kept)  # only the rest (and small files)
    assert hashlib.sha256(big).hexdigest() in (Path(job["workdir"]) / "stdout.log").read_text()
    assert not list(parts.glob("*.part"))


def aif_cmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "aifactory_cli"]


def test_a_container_job_gets_the_store_bound_read_only_and_reads_its_data(bed, tmp_path: Path) -> None:
    """The job dir's data: link points into the store, outside the job dir: the container binds the store
    too, read-only, at the same path (the bed's stub runtime checks that each bind source exists and
    records the arguments; tests/real/test_container_real.py has it)."""
    env, store = bed
    root = tmp_path / "ctr"
    (root / "ds").mkdir(parents=True)
    (root / "ds" / "rows.txt").write_text("row in a container\n")
    (root / "img.sif").write_text("not a real image\n")
    (root / "job.yaml").write_text(
        "name: datactr\nresources: {time: 5m}\nmodules: [aif-stub-runtime]\ncontainer: {image: img.sif}\n"
        "upload: [img.sif]\ndata: [ds]\nrun: cat ds/rows.txt\n"
    )
    r, job = _submit(env, root / "job.yaml", "--wait", "--timeout", "120")
    assert r.returncode == 0 and job["state"] == "COMPLETED", r.stderr
    assert "row in a container" in (Path(job["workdir"]) / "stdout.log").read_text()
    (record,) = [json.loads(p.read_text()) for p in (Path(job["workdir"]) / "aif-stub-runtime").glob("*.json")]
    assert not record["error"], record
    argv = record["argv"]
    binds = ",".join(argv[i + 1] for i, w in enumerate(argv[:-1]) if w in ("--bind", "-B")).split(",")
    real = os.path.realpath(store)
    assert f"{real}:{real}:ro" in binds, argv
    assert (Path(job["workdir"]) / ".aif-data-store").read_text() == real
