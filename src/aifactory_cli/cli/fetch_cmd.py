"""`aifactory fetch JOB`: download the job's `download:` files."""

from __future__ import annotations

from pathlib import Path

import typer

from aifactory_cli.cli import completion, options, output


def register(app: typer.Typer) -> None:
    app.command(
        "fetch",
        help="Download the files matching the spec's download: globs from the job dir, each checked against "
        "the site's sha256. A cut fetch resumes its large files (64 MiB+) at the next fetch into the same --dest.",
    )(fetch)


def fetch(
    job: str = typer.Argument(..., metavar="JOB", autocompletion=completion.jobs),
    dest: Path | None = typer.Option(None, "--dest", "-d", help="Local directory (default ./NAME-ID)."),
    pattern: list[str] = typer.Option([], "--pattern", help="Globs instead of the spec's download: list."),
    task: list[str] = typer.Option(
        [],
        "--task",
        "-t",
        help="Sweeps: only these elements, by index (3), range (0-2) or values (LR=0.1). Default: all.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    with output.service() as svc:
        named = svc.store.find(job)
        if dest is None:  # the default ./NAME-ID, checked like a --dest
            dest = Path.cwd() / f"{named.name}-{named.id}"
        options.check_output_dir(dest, "--dest")  # before anything is downloaded
        done = svc.fetch(job, dest, pattern or None, task or None)
        found, files, target = done.job, done.files, done.target
        if as_json:
            output.print_json(
                {
                    "job": found.to_json(),
                    "dest": str(target),
                    "files": files,
                    # the transfer, for CI: bytes received, seconds, MB/s (10^6 bytes): service.files.Fetched
                    "bytes": done.bytes,
                    "seconds": round(done.seconds, 3),
                    "rate_mb_s": round(done.rate, 1),
                    "checked": done.checked,  # files whose sha256 matched the site's
                    "resumed_bytes": done.resumed,  # brought by an earlier, cut fetch
                    "via": done.via,  # null, or the user's OpenSSH ControlMaster the large files came through
                }
            )
            return
        if not files:
            output.note(f"no files of {found.id} match {', '.join(pattern or found.extra.get('download') or [])}")
        else:
            output.note(
                f"fetched {len(files)} file(s) of {found.id} into {target}: "
                f"{done.bytes / 1e6:.1f} MB in {done.seconds:.1f} s ({done.rate:.1f} MB/s), "
                f"{done.checked} sha256-checked against the site"
                + (f", {done.resumed / 1e6:.1f} MB resumed from an earlier, cut fetch" if done.resumed else "")
                + (f"; large files via {done.via}" if done.via else "")
            )
            if found.array_size:  # which element is where
                for name in sorted({f.split("/", 1)[0] for f in files if "/" in f}):
                    count = sum(1 for f in files if f.startswith(name + "/"))
                    output.note(f"  {name}/: {count} file(s)")
