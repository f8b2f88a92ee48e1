#!/usr/bin/python3 -I
"""A stub container runtime for the test bed: installed as `singularity` and `apptainer`.

The bed has no container runtime (no namespaces, no images), but a job's step must still go through
`<runtime> exec <options> IMAGE COMMAND...` exactly as aifactory renders it for a site. This stub

1. accepts only that shape: `exec`, then options that Singularity/Apptainer `exec` knows (with their
   values), then an image (a `docker://`-style URI, or a file or sandbox directory that exists), then
   a command. Anything else (another subcommand, an unknown option, a missing image or command, a
   bind whose source does not exist) fails loudly, as the real runtime does: `FATAL: ...`, exit 255.
2. records, per task, its argv, what it parsed, the environment it received and the task's ranks,
   to `$AIF_JOB_DIR/aif-stub-runtime/<runtime>.<job>.<step>.<procid>.json` (the working directory
   when AIF_JOB_DIR is unset);
3. execs the command (same process: the program runs "inside"), with the variables the real runtime
   sets inside a container (`<RUNTIME>_CONTAINER`, `<RUNTIME>_NAME`), and, like the real one, with the
   host environment passed in unless `--cleanenv`/`--containall` asks otherwise.

Installed by tests/testbed/start.sh into /opt/aif-stub-runtime/bin; `module load aif-stub-runtime`
puts it on PATH.
"""

from __future__ import annotations

import json
import os
import sys

# `exec` options (Singularity 4 / Apptainer 1.x `exec --help`): those that take a value, and flags.
WITH_VALUE = {
    "--bind": "-B",
    "--mount": None,
    "--env": None,
    "--env-file": None,
    "--home": "-H",
    "--pwd": None,
    "--overlay": "-o",
    "--workdir": "-W",
    "--scratch": "-S",
    "--no-mount": None,
    "--security": None,
    "--network": None,
    "--hostname": None,
    "--app": None,
}
FLAGS = {
    "--nv": None,
    "--nvccli": None,
    "--rocm": None,
    "--cleanenv": "-e",
    "--contain": "-c",
    "--containall": "-C",
    "--writable": "-w",
    "--writable-tmpfs": None,
    "--no-home": None,
    "--fakeroot": "-f",
    "--compat": None,
    "--userns": "-u",
    "--no-init": None,
    "--no-privs": None,
}
SHORT = {short: long for table in (WITH_VALUE, FLAGS) for long, short in table.items() if short}
URI_SCHEMES = (
    "docker://",
    "docker-archive:",
    "docker-daemon:",
    "oras://",
    "library://",
    "shub://",
    "oci:",
    "oci-archive:",
)
# The task's identity, as Slurm and the launch contract give it (recorded as seen, None when unset).
RANK_VARS = (
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURMD_NODENAME",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
)


class Refused(Exception):
    pass


def parse(args: list[str]) -> dict:
    """`exec [options...] IMAGE CMD...` -> its parts; Refused for anything else."""
    if not args or args[0] != "exec":
        raise Refused(f"this stub runs only `exec`, not {args[:1] or 'nothing'} (argv: {args})")
    options: list[list[str]] = []
    binds: list[str] = []
    i = 1
    while i < len(args) and args[i].startswith("-"):
        word = args[i]
        name, eq, inline = word.partition("=")
        name = SHORT.get(name, name)
        if name in FLAGS and not eq:
            options.append([name])
            i += 1
            continue
        if name not in WITH_VALUE:
            raise Refused(f"unknown flag: {word}")
        if eq:
            value = inline
            i += 1
        elif i + 1 < len(args):
            value = args[i + 1]
            i += 2
        else:
            raise Refused(f"flag needs an argument: {word}")
        options.append([name, value])
        if name == "--bind":
            binds.append(value)
    if i >= len(args):
        raise Refused("no image: exec requires at least 2 arg(s), only received 0")
    image = args[i]
    command = args[i + 1 :]
    if not command:
        raise Refused(f"no command after the image {image!r}: exec requires at least 2 arg(s)")
    if not image.startswith(URI_SCHEMES) and not os.path.exists(image):
        raise Refused(f"could not open image {image}: lstat {image}: no such file or directory")
    for value in binds:
        for entry in value.split(","):
            src, _, rest = entry.partition(":")
            opts = rest.partition(":")[2] if rest else ""
            if not src or not os.path.isabs(src):
                raise Refused(f"bind {entry!r} in --bind {value!r}: the source must be an absolute path")
            if not os.path.exists(src):
                dst = rest.partition(":")[0] or src
                raise Refused(f"container creation failed: mount {src}->{dst} error: mount source {src} doesn't exist")
            if opts not in ("", "ro", "rw"):
                raise Refused(f"bind {entry!r}: unknown bind option {opts!r}")
    return {"options": options, "binds": binds, "image": image, "command": command}


def record(runtime: str, argv: list[str], parsed: dict | None, error: str | None) -> None:
    env = dict(os.environ)
    where = os.path.join(env.get("AIF_JOB_DIR") or os.getcwd(), "aif-stub-runtime")
    ident = ".".join(env.get(k) or "x" for k in ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID"))
    out = {
        "runtime": runtime,
        "argv": argv,
        "parsed": parsed,
        "error": error,
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "ranks": {k: env.get(k) for k in RANK_VARS},
        "env": env,
    }
    os.makedirs(where, exist_ok=True)
    path = os.path.join(where, f"{runtime}.{ident}.{os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def main() -> int:
    runtime = os.path.basename(sys.argv[0])
    argv = [runtime, *sys.argv[1:]]
    try:
        parsed = parse(sys.argv[1:])
    except Refused as e:
        record(runtime, argv, None, str(e))
        print(f"FATAL:   {e}", file=sys.stderr)
        print(f"(test bed stub {runtime}: usage `{runtime} exec [exec options...] IMAGE COMMAND...`)", file=sys.stderr)
        return 255
    record(runtime, argv, parsed, None)
    names = {o[0] for o in parsed["options"]}
    if names & {"--cleanenv", "--containall"}:  # the real runtime passes only a minimal environment then
        env = {k: os.environ[k] for k in ("HOME", "USER", "LANG", "TERM") if k in os.environ}
        env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    else:
        env = dict(os.environ)
    prefix = "APPTAINER" if runtime == "apptainer" else "SINGULARITY"
    image = parsed["image"]
    env[f"{prefix}_CONTAINER"] = os.path.abspath(image) if os.path.exists(image) else image
    env[f"{prefix}_NAME"] = os.path.basename(image)
    for o in parsed["options"]:
        if o[0] == "--pwd":
            os.chdir(o[1])
    sys.stdout.flush()
    try:
        os.execvpe(parsed["command"][0], parsed["command"], env)
    except OSError as e:
        print(f'FATAL:   "{parsed["command"][0]}": executable file not found in $PATH ({e})', file=sys.stderr)
        return 255
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
