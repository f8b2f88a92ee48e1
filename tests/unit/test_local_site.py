"""The embedded `local` site end to end, through the real CLI in a subprocess (no Slurm, no SSH)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from tests.conftest import EXAMPLES


def _spec(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _jobs(result) -> list[dict]:
    data = json.loads(result.stdout)
    assert data["schema_version"] == 1
    return data["jobs"]


def test_hello_runs_and_is_tracked(cli) -> None:
    r = cli("submit", str(EXAMPLES / "hello.yaml"))
    assert r.code == 0, r.stderr
    job_id = r.stdout.strip()
    assert cli("wait", job_id, "--timeout", "60").code == 0
    jobs = _jobs(cli("status", "--json"))
    assert [(j["id"], j["state"], j["exit_code"]) for j in jobs] == [(job_id, "COMPLETED", 0)]
    assert jobs[0]["slurm_job_id"] and jobs[0]["submitted_at"] and jobs[0]["ended_at"]
    logs = cli("logs", job_id)
    assert "Hello from aifactory: job" in logs.stdout
    listed = _jobs(cli("list", "--json"))
    assert listed[0]["state"] == "COMPLETED"
    # provenance for a named job
    prov = _jobs(cli("status", job_id, "--json"))[0]["provenance"]
    assert prov["profile"] == "local" and prov["hash"] and "#!/bin/bash" in prov["script"]


def test_failure_exit_code_and_wait_exit_1(cli, tmp_path: Path) -> None:
    spec = _spec(tmp_path, "fail", "run: echo bad >&2; exit 3\n")
    r = cli("submit", str(spec), "--wait", "--json")
    assert r.code == 1, r.stderr
    job = _jobs(r)[0]
    assert (job["state"], job["exit_code"]) == ("FAILED", 3)
    assert "bad" in cli("logs", job["id"], "--stderr").stdout


def test_cancel_running_job(cli, tmp_path: Path) -> None:
    spec = _spec(tmp_path, "sleepy", "run: echo started; sleep 60\n")
    job_id = cli("submit", str(spec)).stdout.strip()
    assert cli("wait", job_id, "--timeout", "1").code == 5
    assert cli("cancel", job_id).code == 0
    r = cli("wait", job_id, "--timeout", "30", "--json")
    assert r.code == 1
    assert _jobs(r)[0]["state"] == "CANCELLED"


def test_time_limit_gives_timeout(cli, tmp_path: Path) -> None:
    spec = _spec(tmp_path, "slow", "resources: {time: 1s}\nrun: sleep 30\n")
    r = cli("submit", str(spec), "--wait", "--json", timeout=60)
    assert r.code == 1
    assert _jobs(r)[0]["state"] == "TIMEOUT"


def test_sweep_reports_each_element(cli, tmp_path: Path) -> None:
    spec = _spec(tmp_path, "sweep", "matrix: {X: [1, 2, 3]}\nrun: echo x=$X; test $X != 2\n")
    r = cli("submit", str(spec), "--wait", "--json")
    assert r.code == 1
    job = _jobs(r)[0]
    assert job["array_size"] == 3 and job["state"] == "FAILED"
    assert [(t["task_id"], t["state"], t["exit_code"]) for t in job["tasks"]] == [
        (0, "COMPLETED", 0),
        (1, "FAILED", 1),
        (2, "COMPLETED", 0),
    ]
    assert cli("logs", job["id"], "--task", "2").stdout.strip() == "x=3"


def test_a_sweep_with_data_gets_one_tree_and_each_element_reads_it(cli, tmp_path: Path) -> None:
    """`matrix:` with `data:`: one tree in the store, one link in the job dir, and every element (its
    own dir) reads the dataset through it; a second sweep sends nothing."""
    (tmp_path / "ds" / "sub").mkdir(parents=True)
    (tmp_path / "ds" / "a.txt").write_text("alpha\n")
    (tmp_path / "ds" / "sub" / "b.txt").write_text("beta\n")
    run = "cat ds/a.txt ds/sub/b.txt > got-$X.txt"
    spec = _spec(tmp_path, "dsweep", f"matrix: {{X: [1, 2, 3]}}\ndata: [ds]\nrun: '{run}'\n")
    r = cli("submit", str(spec), "--wait", "--json")
    assert r.code == 0, r.stderr
    job = _jobs(r)[0]
    assert (job["data"]["files"], job["data"]["trees_made"], job["data"]["sent_files"]) == (2, 1, 2)
    assert [t["state"] for t in job["tasks"]] == ["COMPLETED"] * 3
    work = Path(job["workdir"])
    assert (work / "ds").is_symlink() and "/trees/" in str((work / "ds").resolve())
    outs = sorted(work.rglob("got-*.txt"))
    assert [p.name for p in outs] == ["got-1.txt", "got-2.txt", "got-3.txt"]
    assert [p.read_text() for p in outs] == ["alpha\nbeta\n"] * 3
    again = _jobs(cli("submit", str(spec), "--json"))[0]
    assert (again["data"]["sent_files"], again["data"]["trees_made"]) == (0, 0)


def test_a_data_file_whose_cached_digest_is_stale_is_refused_once_then_sent(cli, tmp_path: Path) -> None:
    """A file rewritten within the clock tick of its hash keeps its stamp and its cached digest; the
    bytes read into the stream do not hash to it: refused (exit 3, nothing submitted), the entry
    dropped, and the next submit reads the file again and sends it. (The stale entry is written into
    the cache here: such a tick cannot be hit on purpose.)"""
    (tmp_path / "in.txt").write_text("new bytes\n")
    spec = _spec(tmp_path, "stale", "data: [in.txt]\nrun: 'cat in.txt > got.txt'\n")
    cache = Path(os.environ["AIFACTORY_HOME"]) / "state" / "data-hashes.json"
    st = (tmp_path / "in.txt").stat()
    stale = hashlib.sha256(b"old bytes\n").hexdigest()
    entry = [st.st_size, st.st_mtime_ns, st.st_ino, stale, st.st_ctime_ns]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({str(tmp_path / "in.txt"): entry}))
    r = cli("submit", str(spec), "--json")
    assert r.code == 3 and "in.txt changed on this machine while it was sent" in r.stderr, r.stderr
    assert cli("list", "--json").stdout.count('"id"') == 0
    assert stale not in cache.read_text()
    r = cli("submit", str(spec), "--wait", "--json")
    assert r.code == 0, r.stderr
    job = _jobs(r)[0]
    assert job["data"]["sent_files"] == 1
    assert (Path(job["workdir"]) / "got.txt").read_text() == "new bytes\n"


def test_dependency_on_failed_job_never_runs(cli, tmp_path: Path) -> None:
    first = _spec(tmp_path, "a", "run: exit 3\n")
    second = _spec(tmp_path, "b", "run: touch ran\n")
    r = cli("submit", str(first), str(second), "--wait", "--json")
    assert r.code == 1
    a, b = _jobs(r)
    assert a["state"] == "FAILED"
    assert (b["state"], b["reason"]) == ("CANCELLED", "DependencyNeverSatisfied")
    assert not (Path(b["workdir"]) / "ran").exists()
    # known to have failed already: --after it is refused up front, and nothing is submitted
    r = cli("submit", str(second), "--after", a["id"])
    assert r.code == 2 and f"dependency {a['id']} ({a['id']}) ended FAILED" in r.stderr, r.stderr
    assert len(_jobs(cli("list", "--json"))) == 2
    ok = cli("submit", str(_spec(tmp_path, "okdep", "run: 'true'\n")), "--wait").code
    assert ok == 0  # after a COMPLETED job is fine ("okdep": a name that cannot be an id prefix)
    assert cli("submit", str(second), "--after", "okdep", "--wait").code == 0


def test_upload_and_fetch(cli, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.txt").write_text("payload\n")
    spec = _spec(
        tmp_path,
        "io",
        "upload: [data/]\ndownload: ['outputs/**']\nrun: mkdir -p outputs/sub && cp data/in.txt outputs/sub/out.txt\n",
    )
    r = cli("submit", str(spec), "--wait", "--json")
    assert r.code == 0, r.stderr
    job = _jobs(r)[0]
    dest = tmp_path / "got"
    f = cli("fetch", job["id"], "--dest", str(dest))
    assert f.code == 0, f.stderr
    assert (dest / "outputs" / "sub" / "out.txt").read_text() == "payload\n"
    assert re.search(r"fetched 1 file\(s\) of \w+ into .*: 0\.0 MB in [0-9.]+ s \([0-9.]+ MB/s\)", f.stderr), f.stderr
    # --json for CI: the transfer's bytes (the local site counts the files' bytes; over SSH the tar
    # stream's, headers included), seconds, MB/s
    f = cli("fetch", job["id"], "--dest", str(tmp_path / "again"), "--json")
    got = json.loads(f.stdout)
    assert got["files"] == ["outputs/sub/out.txt"] and got["dest"] == str(tmp_path / "again")
    assert got["bytes"] == len("payload\n") and got["seconds"] >= 0 and got["rate_mb_s"] >= 0


def test_dry_run_records_nothing(cli, aif_home: Path) -> None:
    r = cli("submit", str(EXAMPLES / "hello.yaml"), "--dry-run")
    assert r.code == 0 and r.stdout.startswith("#!/bin/bash")
    assert _jobs(cli("list", "--json")) == []


def test_job_id_file(cli, tmp_path: Path) -> None:
    ids = tmp_path / "ids"
    r = cli("submit", str(EXAMPLES / "hello.yaml"), "--job-id-file", str(ids))
    assert r.code == 0
    assert ids.read_text().strip() == r.stdout.strip()


def test_status_honours_the_profiles_poll_interval(cli, aif_home: Path, tmp_path: Path) -> None:
    import time

    from aifactory_cli.backends import localrun

    profiles = aif_home / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "slowlocal.yaml").write_text("extends: local\npoll_interval: 3600\n")
    go = tmp_path / "go"
    # the job runs until the test says so: no race with a slow machine
    spec = _spec(tmp_path, "short", f"run: |\n  while [ ! -e '{go}' ]; do sleep 0.1; done\n")
    job_id = cli("submit", str(spec), "--site", "slowlocal").stdout.strip()
    first = _jobs(cli("status", job_id, "--json"))[0]  # the first status asks the site
    assert first["state"] in ("PENDING", "RUNNING")
    go.touch()
    deadline = time.monotonic() + 60
    while (localrun.read_status(Path(first["workdir"])) or {}).get("state") != "COMPLETED":
        assert time.monotonic() < deadline, "the local job did not end"
        time.sleep(0.1)
    # the job has ended, but the site was asked less than poll_interval ago
    assert _jobs(cli("status", job_id, "--json"))[0]["state"] in ("PENDING", "RUNNING")
    assert _jobs(cli("status", job_id, "--json", "--refresh"))[0]["state"] == "COMPLETED"


def test_cancel_before_the_runner_started_is_not_lost(tmp_path: Path) -> None:
    """`cancel` can run between submit and the runner's first save (no runner pid yet): the runner
    must then end CANCELLED without running anything, not overwrite the cancel."""
    from aifactory_cli.backends import localrun
    from aifactory_cli.jobs.jobdir import RUNNER, STATUS

    jobdir = tmp_path / "job"
    jobdir.mkdir()
    marker = tmp_path / "ran"
    (jobdir / "job.sh").write_text(f"touch '{marker}'\n")
    runner = {
        "job_id": 1, "name": "early", "script": "job.sh", "array_size": 0, "max_parallel": None,
        "time_limit": 60, "tasks": 1, "cpus_per_task": 1, "depends_on": [],
    }  # fmt: skip
    localrun.write_json_atomic(jobdir / RUNNER, runner)
    localrun.write_json_atomic(jobdir / STATUS, {"state": "PENDING", "tasks": {}})
    assert localrun.cancel(jobdir)
    localrun.Runner(jobdir).run()
    status = localrun.read_status(jobdir) or {}
    assert status["state"] == "CANCELLED"
    assert not marker.exists()


def test_a_job_whose_site_profile_was_removed_does_not_break_status(cli, aif_home: Path, tmp_path: Path) -> None:
    profiles = aif_home / "profiles"
    profiles.mkdir(parents=True)
    mine = profiles / "gone.yaml"
    mine.write_text("extends: local\n")
    other = cli("submit", str(_spec(tmp_path, "other", "run: 'true'\n"))).stdout.strip()
    job_id = cli("submit", str(_spec(tmp_path, "sleepy", "run: sleep 60\n")), "--site", "gone").stdout.strip()
    mine.unlink()
    r = cli("status", "--json")
    assert r.code == 0, r.stderr
    assert f"site 'gone' has no profile any more; {job_id} keep" in r.stderr
    assert {j["id"] for j in _jobs(r)} >= {job_id, other}  # the other jobs are still followed
    c = cli("cancel", job_id)
    assert c.code == 4 and f"cannot cancel {job_id} (gone job" in c.stderr and "Traceback" not in c.stderr
    # an interrupted submission to that site (in doubt, no Slurm id) does not break status either
    from aifactory_cli.jobs.model import Job, now_iso
    from aifactory_cli.jobs.store import Store

    store = Store()
    store.add(Job(id="deadbeef", token="t" * 32, name="lost", site="gone", state="UNKNOWN",
                  created_at=now_iso(), updated_at=now_iso(), extra={"in_doubt": True}))  # fmt: skip
    store.close()
    assert cli("status", "--json").code == 0
    mine.write_text("extends: local\n")  # restored: it can be followed and cancelled again
    assert cli("cancel", job_id).code == 0
    assert _jobs(cli("wait", job_id, "--timeout", "30", "--json"))[0]["state"] == "CANCELLED"


def test_logs_say_why_they_are_empty_and_check_the_task(cli, tmp_path: Path) -> None:
    job_id = cli("submit", str(_spec(tmp_path, "quiet", "run: 'true'\n"))).stdout.strip()
    assert cli("wait", job_id, "--timeout", "60").code == 0
    r = cli("logs", job_id)
    assert r.code == 0 and r.stdout == "" and f"{job_id} (COMPLETED): its stdout is empty" in r.stderr
    bad = cli("logs", job_id, "--task", "2")
    assert bad.code == 2 and "not an array" in bad.stderr
    sweep = _spec(tmp_path, "sweep", "matrix: {X: [a, b]}\nrun: echo $X\n")
    sid = cli("submit", str(sweep)).stdout.strip()
    assert cli("wait", sid, "--timeout", "60").code == 0
    assert cli("logs", sid, "--task", "1").stdout.strip() == "b"
    out = cli("logs", sid, "--task", "2")
    assert out.code == 2 and f"job {sid} has array elements 0-1, not 2" in out.stderr


def test_config_file_named_but_missing_and_a_damaged_store(cli, aif_home: Path, tmp_path: Path) -> None:
    r = cli(
        "submit", str(EXAMPLES / "hello.yaml"), "--dry-run", env={"AIFACTORY_CONFIG": str(tmp_path / "nosuch.yaml")}
    )
    assert r.code == 2 and "AIFACTORY_CONFIG names" in r.stderr and "does not exist" in r.stderr
    assert cli("list").code == 0  # creates the store
    (db,) = (aif_home).rglob("jobs.sqlite3")
    db.write_bytes(b"this is not sqlite" * 100)
    r = cli("list")
    assert r.code == 3 and "is damaged" in r.stderr and "aifactory sync" in r.stderr and "Traceback" not in r.stderr


def test_plan_names_an_unknown_site_and_cancel_says_a_job_already_ended(cli, tmp_path: Path) -> None:
    r = cli("plan", str(EXAMPLES / "hello.yaml"), "--sites", "local,lumy")
    assert r.code == 4 and "unknown site 'lumy' in --sites" in r.stderr and "did you mean 'lumi'" in r.stderr
    job_id = cli("submit", str(EXAMPLES / "hello.yaml")).stdout.strip()
    assert cli("wait", job_id, "--timeout", "60").code == 0
    c = cli("cancel", job_id)
    assert c.code == 0 and f"{job_id} already ended (COMPLETED): nothing to cancel" in c.stderr


def test_wait_timeout_still_reports_and_wait_options_need_wait(cli, tmp_path: Path) -> None:
    spec = _spec(tmp_path, "slowish", "run: sleep 60\n")
    job_id = cli("submit", str(spec)).stdout.strip()
    r = cli("wait", job_id, "--timeout", "1", "--json")
    assert r.code == 5 and "timeout" in r.stderr.lower()
    # CI still gets the states (PENDING if the runner was slow to start on a loaded machine)
    assert [(j["id"], j["state"] in ("PENDING", "RUNNING")) for j in _jobs(r)] == [(job_id, True)]
    for bad in ("-1", "nan"):
        w = cli("wait", job_id, "--timeout", bad)
        assert w.code == 2 and "not a number of seconds" in w.stderr, (bad, w.stderr)
    # the same jobs with and without --cached: live ones and those that ended recently
    done = cli("submit", str(_spec(tmp_path, "done", "run: 'true'\n"))).stdout.strip()
    assert cli("wait", done, "--timeout", "60").code == 0
    ids = {j["id"] for j in _jobs(cli("status", "--json"))}
    assert ids == {j["id"] for j in _jobs(cli("status", "--cached", "--json"))} == {job_id, done}
    assert cli("cancel", job_id).code == 0
    for option in (["--timeout", "5"], ["--follow"], ["--junit", str(tmp_path / "j.xml")]):
        s = cli("submit", str(spec), *option)
        assert s.code == 2 and f"{option[0]} only applies with --wait" in s.stderr
    assert len(_jobs(cli("list", "--json"))) == 2  # nothing more was submitted


def test_wait_timeout_zero_asks_once(cli, tmp_path: Path) -> None:
    import time

    job_id = cli("submit", str(_spec(tmp_path, "quick", "run: 'true'\n"))).stdout.strip()
    deadline = time.monotonic() + 60
    while True:  # the job has ended by now, but the store does not know it yet
        r = cli("wait", job_id, "--timeout", "0", "--json")
        if r.code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.code == 0, r.stderr
    assert _jobs(r)[0]["state"] == "COMPLETED"


def test_a_name_that_is_also_an_id_prefix_is_ambiguous(aif_home: Path) -> None:
    import pytest

    from aifactory_cli.errors import BadInput
    from aifactory_cli.jobs.model import Job, now_iso
    from aifactory_cli.jobs.store import Store

    store = Store()
    for job_id, name in (("c49a490f", "first"), ("11111111", "c")):
        store.add(Job(id=job_id, token=job_id * 4, name=name, site="local", state="COMPLETED",
                      created_at=now_iso(), updated_at=now_iso()))  # fmt: skip
    with pytest.raises(BadInput, match=r"'c' matches 2 jobs: ") as err:
        store.find("c")
    assert "c49a490f" in err.value.message and "11111111" in err.value.message
    assert store.find("c4").id == "c49a490f" and store.find("first").id == "c49a490f"
    assert store.find("11111111").name == "c"
    store.close()


# --- the launch contract and GPUs on the local site (README, "The launch contract") ---------------

NVIDIA_SMI = """#!/bin/sh
[ "$1" = "-L" ] || exit 1
for i in 0 1 2 3; do echo "GPU $i: NVIDIA H200 (UUID: GPU-0000000$i)"; done
"""  # echo, a shell builtin
TORCHRUN = """#!/bin/bash
printf '%s\\n' "ARGS=$*" "NODE_RANK=$NODE_RANK" "CUDA=${CUDA_VISIBLE_DEVICES-}" > "torchrun.$SLURM_NODEID"
"""
REPORT = (
    'run: echo "R=$RANK L=$LOCAL_RANK W=$WORLD_SIZE LW=$LOCAL_WORLD_SIZE N=$NODE_RANK '
    'M=$MASTER_ADDR:$MASTER_PORT CUDA=${CUDA_VISIBLE_DEVICES-}" > "task.$RANK"\n'
)


def _machine(tmp_path: Path, **tools: str) -> dict[str, str]:
    """PATH with stand-ins for this machine's tools (nvidia-smi: four GPUs)."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in tools.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return env


def _task_reports(workdir: Path) -> list[dict[str, str]]:
    files = sorted(workdir.glob("task.*"), key=lambda p: int(p.suffix[1:]))
    return [dict(w.split("=", 1) for w in f.read_text().split()) for f in files]


def test_local_gpus_are_shared_out_per_node_and_per_task(cli, tmp_path: Path) -> None:
    env = _machine(tmp_path, **{"nvidia-smi": NVIDIA_SMI})
    for binding, expected in (("per_task", ["0", "1", "2", "3"]), ("all", ["0,1", "0,1", "2,3", "2,3"])):
        spec = _spec(tmp_path, binding, REPORT + f"resources: {{nodes: 2, gpus_per_node: 2, gpu_binding: {binding}}}\n")
        r = cli("submit", str(spec), "--wait", "--json", env=env)
        assert r.code == 0, r.stderr
        tasks = _task_reports(Path(_jobs(r)[0]["workdir"]))
        assert [t["CUDA"] for t in tasks] == expected
        assert [(t["R"], t["L"], t["N"], t["W"], t["LW"]) for t in tasks] == [
            (str(r), str(r % 2), str(r // 2), "4", "2") for r in range(4)
        ]
        (master,) = {t["M"] for t in tasks}
        assert master.startswith("127.0.0.1:") and 0 < int(master.split(":")[1]) < 65536


def test_local_gpus_follow_the_users_visible_devices(cli, tmp_path: Path) -> None:
    env = _machine(tmp_path, **{"nvidia-smi": NVIDIA_SMI})
    env["CUDA_VISIBLE_DEVICES"] = "3,1"
    spec = _spec(tmp_path, "vis", REPORT + "resources: {gpus_per_node: all, gpu_binding: per_task}\n")
    r = cli("submit", str(spec), "--wait", "--json", env=env)
    assert r.code == 0, r.stderr
    assert [t["CUDA"] for t in _task_reports(Path(_jobs(r)[0]["workdir"]))] == ["3", "1"]
    too_many = _spec(tmp_path, "many", "run: 'true'\nresources: {nodes: 2, gpus_per_node: 2}\n")
    r = cli("submit", str(too_many), env=env)
    assert r.code == 2 and "2 node(s) x 2 GPUs asked, but this machine has 2 GPU(s)" in r.stderr


def test_local_site_without_gpus_refuses_a_gpu_job(cli, tmp_path: Path) -> None:
    env = _machine(tmp_path, **{"nvidia-smi": "#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n"})
    r = cli("submit", str(_spec(tmp_path, "g", "run: 'true'\nresources: {gpus_per_node: 1}\n")), env=env)
    assert r.code == 2 and "the local site has no GPUs" in r.stderr


def test_local_torchrun_over_two_nodes(cli, tmp_path: Path) -> None:
    env = _machine(tmp_path, **{"nvidia-smi": NVIDIA_SMI, "torchrun": TORCHRUN})
    text = "launcher: torchrun\nrun: train.py --lr 1\nresources: {nodes: 2, gpus_per_node: 2}\n"
    r = cli("submit", str(_spec(tmp_path, "tr", text)), "--wait", "--json", env=env)
    assert r.code == 0, r.stderr
    workdir = Path(_jobs(r)[0]["workdir"])
    ports = set()
    for node in (0, 1):
        seen = dict(line.split("=", 1) for line in (workdir / f"torchrun.{node}").read_text().splitlines())
        args = seen["ARGS"].split()
        assert {"--nnodes=2", "--nproc-per-node=2", "--local-addr=127.0.0.1"} <= set(args)
        assert f"--rdzv-conf=is_host={1 if node == 0 else 0}" in args
        ports |= {a for a in args if a.startswith("--rdzv-endpoint=127.0.0.1:")}
        assert args[-3:] == ["train.py", "--lr", "1"]
        assert (seen["NODE_RANK"], seen["CUDA"]) == (str(node), ["0,1", "2,3"][node])
    assert len(ports) == 1


def test_machine_gpus_reads_nvidia_smi_and_rocm_smi(tmp_path: Path, monkeypatch) -> None:
    from aifactory_cli.backends.local import machine_gpus

    rocm = (  # printf, a shell builtin: PATH holds only the stand-ins, never a real nvidia-smi
        "#!/bin/sh\nprintf '%s\\n' '============ ROCm System Management Interface ============' "
        "'GPU[0]\t\t: Card series: \t\tAMD INSTINCT MI250X (MCM) OAM AC MBA' "
        "'GPU[0]\t\t: Card model: \t\t0x740c' "
        "'GPU[1]\t\t: Card Series: \t\tAMD INSTINCT MI250X (MCM) OAM AC MBA'\n"
    )
    env = _machine(tmp_path, **{"rocm-smi": rocm})
    monkeypatch.setenv("PATH", env["PATH"].split(":", 1)[0])
    monkeypatch.delenv("ROCR_VISIBLE_DEVICES", raising=False)
    assert machine_gpus() == {
        "vendor": "amd",
        "model": "AMD INSTINCT MI250X (MCM) OAM AC MBA",
        "per_node": 2,
        "visible_devices_env": "ROCR_VISIBLE_DEVICES",
    }
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "1")
    assert (machine_gpus() or {})["per_node"] == 1
    _machine(tmp_path, **{"nvidia-smi": NVIDIA_SMI})  # nvidia-smi is asked first
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu = machine_gpus() or {}
    assert (gpu["vendor"], gpu["model"], gpu["per_node"]) == ("nvidia", "NVIDIA H200", 4)
    (tmp_path / "bin" / "nvidia-smi").unlink()
    (tmp_path / "bin" / "rocm-smi").unlink()
    assert machine_gpus() is None
