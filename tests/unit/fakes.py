"""A fake site for the unit tier: a transport over a temp dir, and a fake Slurm behind it.

`FakeTransport.run` runs the command the code sends in bash, in a temp "home" dir, with `sbatch`,
`squeue`, `sacct` and `scancel` on PATH as small executables over one JSON state file (`FakeSlurm`).
They accept the options aifactory passes and print what Slurm 22.05 prints for them (the formats of
tests/data/slurm/): so staging, submission, polling, settling and sync run the real command text,
without the test bed. The test drives the jobs (`start`, `finish`, `forget`) and injects faults:
a rejected or failed sbatch, sbatch that queues the job but reports a timeout, squeue that does not
answer, a connection lost after a command was sent, a refused login. The real tier
(tests/real/) keeps proving the real thing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aifactory_cli.errors import RemoteError
from aifactory_cli.service.session import Service
from aifactory_cli.transport import Command, CommandResult, Stdin, to_shell
from aifactory_cli.transport.tofile import FileSink, ToFile

SBATCH_ERRORS = {
    # as sbatch prints them (tests/data/slurm/sbatch_rejected.txt, and the faults the real tier provokes)
    "rejected": "Invalid account or account/partition combination specified",
    "controller_down": "Unable to contact slurm controller (connect failure)",
    "timeout": "Socket timed out on send/recv operation",
}
SQUEUE_FIELDS = {"i": "id", "T": "state", "r": "reason", "S": "start", "k": "comment", "N": "nodes"}
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}


class FakeSlurm:
    """Slurm's state in `root/slurm.json`; its commands in `root/bin`."""

    def __init__(self, root: Path, create: bool = True) -> None:
        self.root = root
        self.bin = root / "bin"
        self.path = root / "slurm.json"
        if not create:  # inside one of the executables: the state exists already
            return
        self.bin.mkdir(parents=True, exist_ok=True)
        self._save({"next_id": 1000, "jobs": {}, "sbatch_fault": None, "squeue_down": False, "calls": []})
        for name in ("sbatch", "squeue", "sacct", "scancel"):
            exe = self.bin / name
            exe.write_text(
                f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                f"from fakes import FakeSlurm\nfrom pathlib import Path\n"
                f"sys.exit(FakeSlurm(Path({str(root)!r}), create=False).main({name!r}))\n"
            )
            exe.chmod(0o755)

    # --- state ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with open(self.root / "slurm.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = json.loads(self.path.read_text())
            yield state
            self._save(state)

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)

    @property
    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.path.read_text()))

    def jobs(self) -> dict[str, dict[str, Any]]:
        return dict(self.state["jobs"])

    def calls(self, name: str) -> list[list[str]]:
        return [c[1:] for c in self.state["calls"] if c[0] == name]

    def set(self, **faults: Any) -> None:
        """`sbatch_fault=` one of SBATCH_ERRORS (or None); `squeue_down=True`; `test_only_start=` the
        time `sbatch --test-only` answers; `usage=` what `sacct --allocations` prints (sacct_usage.txt)."""
        with self._locked() as s:
            s.update(faults)

    def start(self, job_id: str, nodes: str = "nid005000") -> None:
        """The job runs, on `nodes` (a Slurm host list, as squeue's %N prints it)."""
        with self._locked() as s:
            s["jobs"][job_id].update(state="RUNNING", reason="None", start=int(time.time()), nodes=nodes)

    def finish(self, job_id: str, code: int = 0, state: str | None = None) -> None:
        """The job ends; like the real job script, it leaves its exit code in the job dir."""
        with self._locked() as s:
            job = s["jobs"][job_id]
            now = int(time.time())
            job.update(
                state=state or ("COMPLETED" if code == 0 else "FAILED"),
                exit=f"{code}:0",
                reason="None",
                start=job.get("start") or now,
                end=now,
            )
            Path(job["workdir"], "exit_code").write_text(f"{code}\n")

    def forget(self, job_id: str, acct: bool = False) -> None:
        """squeue forgets the job (MinJobAge); with `acct`, sacct too (no accounting)."""
        with self._locked() as s:
            s["jobs"][job_id]["in_queue"] = False
            if acct:
                s["jobs"][job_id]["in_acct"] = False

    # --- the commands ----------------------------------------------------------------------------------

    def main(self, name: str) -> int:
        args = sys.argv[1:]
        with self._locked() as s:
            s["calls"].append([name, *args])
            out, err, rc = getattr(self, "_" + name)(s, args)
        sys.stdout.write(out)
        sys.stderr.write(err)
        return rc

    def _sbatch(self, s: dict[str, Any], args: list[str]) -> tuple[str, str, int]:
        fault = s.get("sbatch_fault")
        if fault in ("rejected", "controller_down"):
            return "", f"sbatch: error: Batch job submission failed: {SBATCH_ERRORS[fault]}\n", 1
        if "--test-only" in args:  # the script on stdin; the estimate on stderr (sbatch_test_only.txt)
            prefix = "#SBATCH --partition="
            lines = sys.stdin.read().splitlines()
            partition = next((line[len(prefix) :] for line in lines if line.startswith(prefix)), "unknown")
            start = s.get("test_only_start") or "2026-11-30T18:13:11"
            where = f"using 1 processors on nodes nid005000 in partition {partition}"
            return "", f"sbatch: Job {s['next_id']} to start at {start} {where}\n", 0
        script = Path(args[-1]).read_text()
        options = dict(  # a flag (--requeue) has no value
            (*line[len("#SBATCH ") :].split("=", 1), "")[:2]
            for line in script.splitlines()
            if line.startswith("#SBATCH --")
        )
        job_id = str(s["next_id"])
        s["next_id"] += 1
        s["jobs"][job_id] = {
            "id": job_id,
            "name": options.get("--job-name", "job.sh"),
            "comment": options.get("--comment", ""),
            "workdir": os.getcwd(),
            "state": "PENDING",
            "reason": "Priority",
            "exit": "0:0",
            "submit": int(time.time()),
            "start": None,
            "end": None,
            "in_queue": True,
            "in_acct": True,
            "array": options.get("--array", "").split("%")[0],  # "0-2": its elements share the state
        }
        if fault == "timeout":  # queued, yet sbatch reports a failure
            return "", f"sbatch: error: Batch job submission failed: {SBATCH_ERRORS[fault]}\n", 1
        return f"{job_id}\n", "", 0

    def _squeue(self, s: dict[str, Any], args: list[str]) -> tuple[str, str, int]:
        if s.get("squeue_down"):
            return "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n", 1
        opts = _options(args)
        fields = [SQUEUE_FIELDS[f.lstrip("%")] for f in opts.get("--format", "%i|%T").split("|")]
        wanted = set(opts["--jobs"].split(",")) if "--jobs" in opts else None
        lines = []
        for job in s["jobs"].values():
            if not job["in_queue"] or (wanted is not None and job["id"] not in wanted):
                continue
            row = {
                **job,
                "id": _shown_id(job),
                "start": _time(job["start"]) if job["start"] else "N/A",
                "comment": job["comment"] or "(null)",
                "nodes": job.get("nodes") or "",
            }
            lines.append("|".join(str(row[f]) for f in fields))
        return "".join(line + "\n" for line in lines), "", 0

    def _sacct(self, s: dict[str, Any], args: list[str]) -> tuple[str, str, int]:
        opts = _options(args)
        if "--allocations" in args and s.get("usage") is not None:  # `usage`: the recorded rows, as set
            return s["usage"], "", 0
        fields = opts["--format"].split(",")
        wanted = set(opts["--jobs"].split(",")) if "--jobs" in opts else None
        lines = []
        for job in s["jobs"].values():
            if not job["in_acct"] or (wanted is not None and job["id"] not in wanted):
                continue
            if wanted is None and job["state"] == "PENDING":
                continue  # --starttime without --jobs: a pending job has not started
            elapsed = (job["end"] or int(time.time())) - job["start"] if job["start"] else 0
            values = {
                "JobID": _shown_id(job),
                "JobIDRaw": _shown_id(job),
                "State": job["state"],
                "ExitCode": job["exit"],
                "Reason": job["reason"],
                "Start": _time(job["start"]) if job["start"] else "Unknown",
                "End": _time(job["end"]) if job["end"] else "Unknown",
                "Elapsed": time.strftime("%H:%M:%S", time.gmtime(elapsed)),
                "Comment": job["comment"],
                "WorkDir": job["workdir"],
            }
            lines.append("|".join(str(values[f]) for f in fields))
        return "".join(line + "\n" for line in lines), "", 0

    def _scancel(self, s: dict[str, Any], args: list[str]) -> tuple[str, str, int]:
        for job_id in args:
            job = s["jobs"].get(job_id)
            if job is None:
                return "", f"scancel: error: Invalid job id {job_id}\n", 1
            if job["state"] not in FINAL:
                job.update(state="CANCELLED", reason="None", end=int(time.time()))
        return "", "", 0


def _options(args: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) if "=" in a else (a, "") for a in args if a.startswith("--"))


def _time(epoch: int) -> str:
    """As Slurm prints a time: epoch seconds under SLURM_TIME_FORMAT=%s, else local ISO time."""
    if os.environ.get("SLURM_TIME_FORMAT") == "%s":
        return str(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


class FakeTransport:
    """A transport over a temp dir: commands run in bash in `home` with the fake Slurm on PATH."""

    name = "fake"
    username = "tester"

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.slurm = FakeSlurm(root / "slurm")
        self.commands: list[str] = []
        self.refuse_login = False
        # the connection drops after a command matching this was sent (it still ran on the site)
        self.drop_after: Callable[[str], bool] | None = None
        self.connected = False
        self.closed = False
        self.tunnels: list[tuple[str, int]] = []  # (host, port) of every open_tunnel

    def connect(self) -> None:
        if self.refuse_login:
            raise RemoteError("cannot connect to fake.invalid: Connection refused", "is the site up?")
        self.connected = True

    def _path(self, path: str) -> Path:
        return Path(path) if os.path.isabs(path) else self.home / path

    def run(self, command: Command, *, stdin: Stdin = None, timeout: float | None = None) -> CommandResult:
        self.connect()
        line = to_shell(command)
        self.commands.append(line)
        env = {**os.environ, "HOME": str(self.home), "PATH": f"{self.slurm.bin}:{os.environ['PATH']}"}
        env.pop("SLURM_TIME_FORMAT", None)
        with tempfile.TemporaryFile() as data:
            if callable(stdin):
                stdin(data)  # type: ignore[arg-type]
            elif stdin:
                data.write(stdin)
            data.seek(0)
            proc = subprocess.run(
                ["bash", "-c", line], stdin=data, capture_output=True, cwd=self.home, env=env, timeout=timeout or 60
            )
        if self.drop_after is not None and self.drop_after(line):
            self.drop_after = None
            raise RemoteError("the connection to fake.invalid was lost: Socket is closed")
        return CommandResult(
            proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        )

    def read_bytes(self, path: str, offset: int = 0) -> bytes:
        with open(self._path(path), "rb") as fh:
            fh.seek(offset)
            return fh.read()

    def run_to_file(
        self,
        command: Command,
        local: Path,
        *,
        append: bool = False,
        digest: bool = False,
        stdin: bytes | None = None,
        progress: Any = None,
    ) -> ToFile:
        self.connect()
        line = to_shell(command)
        self.commands.append(line)
        env = {**os.environ, "HOME": str(self.home), "PATH": f"{self.slurm.bin}:{os.environ['PATH']}"}
        proc = subprocess.run(["bash", "-c", line], input=stdin or b"", capture_output=True, cwd=self.home, env=env)
        with FileSink(local, append=append, digest=digest, progress=progress) as sink:
            if proc.stdout:
                sink(proc.stdout)
        return sink.result(proc.returncode, proc.stderr)

    def get_tar(self, workdir: str, files: list[str], local_archive: Path, progress: Any = None) -> None:
        with tarfile.open(local_archive, "w|") as tar:  # a stream, as the contract says (a FIFO)
            for name in files:
                tar.add(str(self._path(workdir) / name), arcname=name, recursive=False)
                if progress:
                    progress((self._path(workdir) / name).stat().st_size)

    def put_bytes(self, data: bytes, path: str, mode: int = 0o600) -> None:
        self._path(path).write_bytes(data)
        self._path(path).chmod(mode)

    def get_file(self, path: str, local: Path, progress: Any = None) -> None:
        local.write_bytes(self.read_bytes(path))

    def open_tunnel(self, host: str, port: int) -> Any:
        """As the login node would: every host of the fake site is this machine (127.0.0.1)."""
        import socket

        from aifactory_cli.errors import TunnelRefused
        from aifactory_cli.transport.relay import SocketPipe

        self.connect()
        self.tunnels.append((host, port))
        try:
            return SocketPipe(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError as exc:
            raise TunnelRefused(f"the login node could not connect to {host}:{port}: Connection refused") from exc

    def close(self) -> None:
        self.closed = True


# --- a fake site for the service tests -------------------------------------------------------------------

SITE = "fakesite"
# the built-in LUMI profile (its template, partitions, limits), reached through FakeTransport
PROFILE = "extends: lumi\nssh: {host: fake.invalid}\nworkdir: aifactory/{job}\npoll_interval: 0\n"


class Session:
    """A new Service per command, as the CLI makes one, all reaching the same fake site."""

    def __init__(self, fake: FakeTransport) -> None:
        self.fake = fake
        self.notes: list[str] = []

    def __call__(self) -> Service:
        return Service(notify=self.notes.append, transport_factory=lambda site, loaded: self.fake)


def _shown_id(job: dict[str, Any]) -> str:
    """As Slurm shows an array whose elements are in one state: `1000_[0-2]`."""
    return f"{job['id']}_[{job['array']}]" if job.get("array") else str(job["id"])


def fake_site(tmp_path: Path, monkeypatch: Any) -> Session:
    """SITE as a user profile (after the `aif_home` fixture), an account, and its fake transport."""
    # tests/profiles (as tests/conftest.py's TEST_PROFILES; `from conftest import` would find
    # tests/real/conftest.py when the whole suite runs)
    test_profiles = Path(__file__).resolve().parents[1] / "profiles"

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / f"{SITE}.yaml").write_text(PROFILE)
    monkeypatch.setenv("AIFACTORY_PROFILES", f"{profiles}:{test_profiles}")
    monkeypatch.setenv("AIFACTORY_ACCOUNT", "project_465000001")
    return Session(FakeTransport(tmp_path / "site"))


def spec(tmp_path: Path, name: str = "hello", body: str = "run: echo hi\n") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{body}resources: {{time: 5m}}\n")
    return path
