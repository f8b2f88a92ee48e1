"""Sweep elements: `matrix:` as an explicit list, naming elements (index, range, values), fetch laying
an element's files under its name, failures shown with values and stderr, the batch script's
per-element working directory (run with bash on the local site's template), and `logs --task VALUES`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from fakes import SITE, Session, fake_site, spec

from aifactory_cli.errors import BadInput, SpecError
from aifactory_cli.jobs import jobdir
from aifactory_cli.jobs.model import Job, Task
from aifactory_cli.service import elements
from aifactory_cli.service.files import plan_fetch
from aifactory_cli.spec.model import JobSpec, load_spec_text

T0 = "2026-11-30T10:00:00+00:00"


def _job(matrix: object = None, array_size: int | None = None, **kw: object) -> Job:
    spec_json = json.dumps({"run": "x", "matrix": matrix}) if matrix is not None else None
    if array_size is None:
        array_size = (len(matrix) if isinstance(matrix, list) else 0) if matrix is not None else 0
    fields: dict = dict(
        id="id-sweep", token="t" * 32, name="sweep", site=SITE, state="FAILED", created_at=T0, updated_at=T0,
        slurm_job_id="1234", array_size=array_size, spec_json=spec_json,
    )  # fmt: skip
    fields.update(kw)
    return Job(**fields)


PRODUCT = {"A": ["1", "2"], "B": ["x", "y"]}  # 0: A=1 B=x, 1: A=1 B=y, 2: A=2 B=x, 3: A=2 B=y


# --- matrix as an explicit list ------------------------------------------------------------------------


def test_an_explicit_list_of_elements_is_the_sweep() -> None:
    spec = load_spec_text("run: x\nmatrix: [{LR: 0.1, BS: 32}, {LR: 1e-3, BS: 64}, {LR: abc}]\n").spec
    assert spec.array_size == 3
    assert spec.matrix_elements() == [{"LR": "0.1", "BS": "32"}, {"LR": "1e-3", "BS": "64"}, {"LR": "abc"}]
    assert spec.matrix_elements() is not spec.matrix  # a copy
    one = load_spec_text("run: x\nmatrix: [{LR: 0.3}]\n").spec
    assert (one.array_size, one.matrix_elements()) == (1, [{"LR": "0.3"}])


def test_a_product_matrix_and_no_matrix_still_work() -> None:
    assert load_spec_text("run: x\nmatrix: {A: [1, 2], B: [x, y]}\n").spec.array_size == 4
    plain = load_spec_text("run: x\n").spec
    assert (plain.array_size, plain.matrix_elements()) == (0, [])


@pytest.mark.parametrize(
    ("matrix", "needles"),
    [
        ("[]", ["matrix", "must not be empty"]),
        ("[{LR: 0.1}, 5]", ["matrix[1]", "must be a mapping"]),
        ("[{LR: 0.1}, {}]", ["matrix[1]", "must be a mapping"]),
        ("[{LR: 0.1}, {'A-B': 1}]", ["matrix[1]", "'A-B'", "valid environment variable name"]),
        ("[{AIF_X: 1}]", ["matrix[0].AIF_X", "set by aifactory"]),
        ("[{LR: [1, 2]}]", ["matrix[0].LR", "single value"]),
        ("[{LR: {a: 1}}]", ["matrix[0].LR", "single value"]),
        ("[{LR: null}]", ["matrix[0].LR", "single value"]),
    ],
)
def test_a_bad_explicit_list_is_a_clear_spec_error(matrix: str, needles: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(f"run: x\nmatrix: {matrix}\n")
    text = str(info.value.message)
    assert all(n in text for n in needles), text


# --- values, names and choosing elements ---------------------------------------------------------------


def test_values_of_a_product_an_explicit_list_and_a_plain_job() -> None:
    product = _job(PRODUCT, array_size=4)
    assert elements.values_of(product) == [
        {"A": "1", "B": "x"}, {"A": "1", "B": "y"}, {"A": "2", "B": "x"}, {"A": "2", "B": "y"},
    ]  # fmt: skip
    explicit = _job([{"LR": "0.3"}, {"LR": "-1", "BS": "8"}])
    assert elements.values_of(explicit) == [{"LR": "0.3"}, {"LR": "-1", "BS": "8"}]
    assert elements.values_of(_job()) == []  # plain job, no spec
    assert elements.values_of(_job({}, array_size=0)) == []
    assert elements.values_of(_job(PRODUCT, array_size=4, spec_json="not json")) == []


def test_describe_and_label() -> None:
    job = _job([{"LR": "-1"}, {"P": "a/b c'd\"e"}])
    assert elements.describe(job, 0) == "element 0 (LR=-1)"
    assert elements.describe(job, 7) == "element 7"  # out of range: the index alone
    assert elements.label(job, 0) == "0_LR=-1"
    safe = elements.label(job, 1)
    assert safe.startswith("1_P=a") and not set("/ '\"") & set(safe), safe
    assert safe == "1_P=a-b-c-d-e"
    assert elements.label(_job([{"X": "y" * 500}]), 0) == ("0_X=" + "y" * 500)[:120]


def test_select_by_index_range_and_values() -> None:
    job = _job(PRODUCT, array_size=4)
    assert elements.select(job, ["2"]) == [2]
    assert elements.select(job, ["0-2"]) == [0, 1, 2]
    assert elements.select(job, ["2-9"]) == [2, 3]  # past the end: the elements it has
    assert elements.select(job, ["A=2"]) == [2, 3]
    assert elements.select(job, ["A=1,B=y"]) == [1]  # every pair must match
    assert elements.select(job, [" B = y "]) == [1, 3]
    assert elements.select(job, ["3", "A=2", "0"]) == [3, 2, 0]  # each once, in the order named
    lr = _job([{"LR": "0.1"}, {"LR": "0.2"}])
    assert elements.select(lr, ["LR=0.1"]) == [0]


@pytest.mark.parametrize("word", ["A=3", "C=1", "A=1,B=z", "9", "notvalues", "7-9"])
def test_select_names_the_elements_when_nothing_matches(word: str) -> None:
    job = _job(PRODUCT, array_size=4)
    with pytest.raises(BadInput) as info:
        elements.select(job, [word])
    assert f"has no element {word!r}" in info.value.message
    assert "element 0 (A=1 B=x)" in (info.value.hint or "") and "element 3 (A=2 B=y)" in (info.value.hint or "")


def test_select_on_a_plain_job_is_bad_input() -> None:
    with pytest.raises(BadInput, match="not a sweep"):
        elements.select(_job(), ["0"])


# --- logs --task by values -------------------------------------------------------------------------------


def test_log_task_by_index_or_values() -> None:
    from aifactory_cli.service.track import _log_task

    job = _job(PRODUCT, array_size=4)
    assert _log_task(job, None) == 0
    assert _log_task(job, 3) == 3
    assert _log_task(job, "2") == 2
    assert _log_task(job, "A=1,B=y") == 1
    assert _log_task(job, "B=x,A=2") == 2
    with pytest.raises(BadInput) as info:
        _log_task(job, "A=2")
    assert "matches 2 elements" in info.value.message
    assert "element 2 (A=2 B=x)" in info.value.message and "element 3 (A=2 B=y)" in info.value.message
    with pytest.raises(BadInput, match="has no element 'A=9'"):
        _log_task(job, "A=9")
    with pytest.raises(BadInput, match="not an array"):
        _log_task(_job(), "A=1")


# --- fetch ---------------------------------------------------------------------------------------------


FILES = [
    "job.sh",
    "stdout.0.log",
    "outputs/shared.txt",
    "elements/0/outputs/model.pt",
    "elements/0/outputs/sub/log.txt",
    "elements/0/notes.txt",
    "elements/1/outputs/model.pt",
    "elements/x/outputs/odd.pt",  # not an element dir
]


def test_plan_fetch_of_a_plain_job_keeps_the_paths() -> None:
    files = ["outputs/a.pt", "elements/0/outputs/b.pt", "job.sh"]
    assert plan_fetch(_job(), files, ["outputs/**"]) == {"outputs/a.pt": "outputs/a.pt"}


def test_plan_fetch_puts_element_files_under_their_names() -> None:
    job = _job([{"LR": "0.1"}, {"LR": "a b"}])
    assert plan_fetch(job, FILES, ["outputs/**"]) == {
        "outputs/shared.txt": "outputs/shared.txt",
        "elements/0/outputs/model.pt": "0_LR=0.1/outputs/model.pt",
        "elements/0/outputs/sub/log.txt": "0_LR=0.1/outputs/sub/log.txt",
        "elements/1/outputs/model.pt": "1_LR=a-b/outputs/model.pt",
    }
    # patterns match relative to the element dir
    assert plan_fetch(job, FILES, ["*.txt"]) == {"elements/0/notes.txt": "0_LR=0.1/notes.txt"}


def test_plan_fetch_of_chosen_elements_drops_the_shared_files() -> None:
    job = _job([{"LR": "0.1"}, {"LR": "0.2"}])
    assert plan_fetch(job, FILES, ["outputs/**"], chosen=[1]) == {
        "elements/1/outputs/model.pt": "1_LR=0.2/outputs/model.pt"
    }


@pytest.fixture
def session(aif_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    return fake_site(tmp_path, monkeypatch)


def test_fetch_brings_each_elements_files_to_its_own_dir(session: Session, tmp_path: Path) -> None:
    body = 'matrix: [{LR: "0.1"}, {LR: "0.2"}]\nrun: echo $LR\ndownload: ["outputs/**", "train.py"]\n'
    with session() as svc:
        job = svc.submit(svc.prepare(spec(tmp_path, "sw", body), SITE))
    workdir = session.fake.home / (job.workdir or "")
    (workdir / "train.py").write_text("print(1)\n")
    (workdir / "outputs").mkdir()
    (workdir / "outputs" / "shared.txt").write_text("shared\n")
    for n in (0, 1):
        edir = workdir / "elements" / str(n)
        (edir / "outputs").mkdir(parents=True)
        (edir / "outputs" / "result.txt").write_text(f"element {n}\n")
        (edir / "train.py").symlink_to("../../train.py")  # as the batch script links it: not fetched
    with session() as svc:
        done = svc.fetch(job.id, tmp_path / "got")
        files, target = done.files, done.target
    assert sorted(files) == [
        "0_LR=0.1/outputs/result.txt",
        "1_LR=0.2/outputs/result.txt",
        "outputs/shared.txt",
        "train.py",
    ]
    assert (target / "0_LR=0.1" / "outputs" / "result.txt").read_text() == "element 0\n"
    assert (target / "1_LR=0.2" / "outputs" / "result.txt").read_text() == "element 1\n"
    assert (target / "outputs" / "shared.txt").read_text() == "shared\n"
    assert not (target / ".aif-fetch").exists() and not (target / "elements").exists()
    assert not (target / "0_LR=0.1" / "train.py").exists()
    with session() as svc:  # --task: only that element, no shared files
        done = svc.fetch(job.id, tmp_path / "one", tasks=["LR=0.2"])
        files, target = done.files, done.target
    assert files == ["1_LR=0.2/outputs/result.txt"]
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == files


# --- failures ------------------------------------------------------------------------------------------


def _site_job(session: Session, name: str, **kw: object) -> Job:
    workdir = session.fake.home / "aifactory" / name
    workdir.mkdir(parents=True, exist_ok=True)
    return _job(id=f"id-{name}", name=name, workdir=str(workdir), **kw)


def test_failures_of_a_plain_job_and_a_sweep_element(session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    from aifactory_cli.cli.failures import report
    from aifactory_cli.service.failures import TAIL_LINES, collect

    plain = _site_job(session, "plain", state="FAILED", exit_code=3, reason="NonZeroExitCode")
    lines = [f"line {i}" for i in range(40)]
    Path(plain.workdir or "", "stderr.log").write_text("\n".join(lines) + "\n")
    tasks = [Task(0, "COMPLETED", exit_code=0), Task(1, "FAILED", exit_code=7), Task(2, "COMPLETED", exit_code=0)]
    sweep = _site_job(session, "sw", matrix=[{"LR": "0.1"}, {"LR": "-1"}, {"LR": "0.3"}], tasks=tasks)
    Path(sweep.workdir or "", jobdir.log_name(stderr=True, task=1)).write_text("ValueError: lr must be > 0\n")
    Path(sweep.workdir or "", jobdir.log_name(stderr=True, task=0)).write_text("not this one\n")

    shown, more = collect(session(), [plain, sweep])
    assert more == 0 and [(f.job.name, f.task, f.exit_code) for f in shown] == [("plain", None, 3), ("sw", 1, 7)]
    assert shown[0].stderr_tail.splitlines() == lines[-TAIL_LINES:]
    assert shown[1].what == "element 1 (LR=-1)"

    report(session(), [plain, sweep])
    err = capsys.readouterr().err
    assert "id-plain plain: FAILED exit 3 (NonZeroExitCode)" in err
    assert "  | line 39" in err and f"  | line {40 - TAIL_LINES}" in err and f"| line {39 - TAIL_LINES}\n" not in err
    assert "full log: aifactory logs id-plain --stderr" in err
    assert "id-sw sw element 1 (LR=-1): FAILED exit 7" in err
    assert "  | ValueError: lr must be > 0" in err and "not this one" not in err
    assert "full log: aifactory logs id-sw --task 1 --stderr" in err
    assert "aifactory rerun" not in err  # two jobs failed: no one rerun line fits


def test_a_sweep_with_failed_elements_hints_rerun_and_counts_the_rest(
    session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    from aifactory_cli.cli.failures import report
    from aifactory_cli.service.failures import MAX_SHOWN

    n = MAX_SHOWN + 3
    tasks = [Task(i, "FAILED", exit_code=1) for i in range(n)] + [Task(n, "COMPLETED", exit_code=0)]
    sweep = _site_job(session, "big", matrix=[{"I": str(i)} for i in range(n + 1)], tasks=tasks)
    report(session(), [sweep])
    err = capsys.readouterr().err
    assert err.count(": FAILED exit 1") == MAX_SHOWN
    assert f"element {MAX_SHOWN - 1} (I={MAX_SHOWN - 1})" in err and f"element {MAX_SHOWN} (I=" not in err
    assert err.count("(stderr not available: ") == MAX_SHOWN  # no stderr files: said, not hidden
    assert "... and 3 more failed element(s): aifactory status id-big --json" in err
    assert "rerun the failed elements: aifactory rerun id-big --failed" in err


def test_a_completed_job_reports_nothing(session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    from aifactory_cli.cli.failures import report

    report(session(), [_site_job(session, "ok", state="COMPLETED", exit_code=0)])
    assert capsys.readouterr().err == ""


# --- the batch script: each element in its own directory -------------------------------------------------


def test_the_script_runs_each_element_in_its_own_dir(tmp_path: Path) -> None:
    from aifactory_cli.sites.profile import load_profile
    from aifactory_cli.sites.render import render
    from aifactory_cli.sites.resolve import Overrides, resolve
    from aifactory_cli.sites.userconfig import UserConfig

    run = 'pwd -P > where.txt; echo "$AIF_ELEMENT|$AIF_ELEMENT_DIR|$LR" > env.txt; cat train.py data/d.txt > seen.txt'
    spec = JobSpec.model_validate({"run": run, "matrix": [{"LR": "0.1"}, {"LR": "0.2"}]})
    script = render(resolve(spec, load_profile("local"), UserConfig(), Overrides()), "0" * 32, "00000000").script
    jobd = tmp_path / "job"
    jobd.mkdir()
    (jobd / "job.sh").write_text(script)
    (jobd / "train.py").write_text("print('train')\n")
    (jobd / "data").mkdir()
    (jobd / "data" / "d.txt").write_text("data\n")
    for own in ("aifactory.json", "stdout.log", "exit_code.1"):
        (jobd / own).write_text("{}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "AIF_"))}
    env.update(SLURM_SUBMIT_DIR=str(jobd), SLURM_ARRAY_TASK_ID="1")
    proc = subprocess.run(["bash", str(jobd / "job.sh")], cwd=jobd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    edir = jobd / "elements" / "1"
    assert (edir / "where.txt").read_text().strip() == str(edir.resolve())
    assert (edir / "env.txt").read_text().strip() == f"1|{jobd}/elements/1|0.2"
    assert (edir / "seen.txt").read_text() == "print('train')\ndata\n"
    for name in ("train.py", "data"):
        assert (edir / name).is_symlink() and os.readlink(edir / name) == f"../../{name}"
    for own in ("job.sh", "aifactory.json", "stdout.log", "exit_code.1", "elements"):
        assert not os.path.lexists(edir / own), own
    assert not (jobd / "where.txt").exists() and not (jobd / "seen.txt").exists()
    assert not (jobd / "elements" / "0").exists()
