"""Every job's AIF_PORT (README, "Interactive work"): picked on the job's first node when the batch
script starts, exported to every task with AIF_HOST, recorded in the job dir as "HOST PORT" (what
`aifactory forward` reads). The rendered scripts run under the launch-contract stand-ins for srun and
friends (tests/unit/test_launch_contract.py); the local site runs for real."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from aifactory_cli.jobs import jobdir
from tests.unit.test_launch_contract import _run, _script

REPORT = 'printf "%s %s\\n" "$AIF_HOST" "$AIF_PORT" > "port.$SLURM_PROCID"'
TWO_NODES = f"name: p\nrun: '{REPORT}'\nresources: {{nodes: 2, tasks_per_node: 2, time: 1h}}\n"


def _can_bind(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_every_task_sees_the_port_of_the_first_node_and_the_job_dir_records_it(tmp_path: Path) -> None:
    job_dir = _run(tmp_path, _script(TWO_NODES, "lumi"), SLURMD_NODENAME="nid005000")
    recorded = (job_dir / jobdir.aif_port_name()).read_text()
    host, port = jobdir.parse_aif_port(recorded) or ("", 0)
    assert host == "nid005000" and 1024 < port < 65536
    assert _can_bind(port)  # it was free, and the script did not keep it
    seen = {(job_dir / f"port.{t}").read_text().strip() for t in range(4)}
    assert seen == {f"nid005000 {port}"}
    assert not list(job_dir.glob("*.tmp"))


def test_without_python3_a_bash_loop_picks_the_port(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\nexit 127\n")  # a node without python3
    (fake / "python3").chmod(0o755)
    text = _script(TWO_NODES, "jupiter")
    # the stand-ins' dir comes first on PATH, so put the broken python3 in front inside the script
    text = text.replace("\nAIF_PORT=", f'\nPATH="{fake}:$PATH"\nAIF_PORT=', 1)
    job_dir = _run(tmp_path, text, SLURMD_NODENAME="jpbo-001-01")
    host, port = jobdir.parse_aif_port((job_dir / "aif_port").read_text()) or ("", 0)
    assert host == "jpbo-001-01" and 32768 <= port < 32768 + 28000


def test_an_array_element_records_its_own(tmp_path: Path) -> None:
    spec = TWO_NODES.replace("resources:", "matrix: {X: [a, b]}\nresources:")
    job_dir = _run(tmp_path, _script(spec, "lumi"), SLURMD_NODENAME="nid005001", SLURM_ARRAY_TASK_ID="1")
    assert (job_dir / "aif_port.1").read_text().startswith("nid005001 ")
    assert not (job_dir / "aif_port").exists()
    assert not (job_dir / "elements" / "1" / "aif_port.1").exists()  # not linked into the element's dir


def test_parse_aif_port() -> None:
    assert jobdir.parse_aif_port("nid005000 41234\n") == ("nid005000", 41234)
    for bad in ("", "nid005000", "nid005000 ", "nid005000 0", "nid005000 70000", "a b c", "nid x"):
        assert jobdir.parse_aif_port(bad) is None


def test_local_site_records_loopback_and_a_free_port(cli, tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(f"name: p\nrun: '{REPORT}'\nresources: {{nodes: 2, tasks_per_node: 1, time: 5m}}\n")
    result = cli("submit", str(spec), "--wait", "--json")
    assert result.code == 0, result.stderr
    workdir = Path(json.loads(result.stdout)["jobs"][0]["workdir"])
    host, port = jobdir.parse_aif_port((workdir / "aif_port").read_text()) or ("", 0)
    assert host == "127.0.0.1" and _can_bind(port)
    assert (workdir / "port.1").read_text() == f"127.0.0.1 {port}\n"
