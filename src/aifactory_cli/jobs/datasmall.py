"""The small files of a spec's `data:` (under `jobs.datastore.LARGE` bytes each) and its dataset trees,
into the site's store in one tar stream per submission, in two commands:

1. `unpack_command`: GNU tar unpacks the stream into a private attempt dir (`tmp/t.TOKEN/`), and the
   stream is hashed as it arrives (`tee` into `openssl dgst`/`sha256sum`). A whole stream prints
   `STREAM DIGEST` and stays in the attempt dir; a cut one (tar failed) is checked file by file, and
   what arrived whole is stored (the next attempt sends only the rest).
2. `commit_command`: the files move into `sha256/` and the trees into `trees/`. The client asks for
   it without a second read of the files when the site's digest of the stream is the one of the
   stream it wrote, and every file's bytes, hashed as they went into that stream, were the sha256 its
   name says (`transport.tarstream.LocalTar`): then as the first step of the job's submit command
   (`jobs.staging.UploadPlan.add_prelude`), no round trip of its own. Else, on its own and with
   `verify`, each file is hashed again on the site and one that does not match its name is dropped and
   named (`BAD DIGEST`).

Reading 10,000 files back after unpacking them took 0.4-0.6 s on the test bed; the stream's hash
costs no wait at all (it runs while the stream arrives)."""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable

from aifactory_cli.jobs.datastore import MISMATCH_RC, PICK_SHA256, DataFile
from aifactory_cli.jobs.datatree import Tree, tree_links
from aifactory_cli.transport.tarstream import LocalTar

_HEX = re.compile(r"[0-9a-f]{64}")


def attempt_dir(token: str) -> str:
    """`tmp/t.` and the token's first 16 characters: a member's name (`tmp/t.X/ab/HASH`, 86 bytes) then
    fits a tar header's 100 bytes, and so does a tree link's target (the whole token made each link
    two more records: 10 MB and 10,000 headers more for 10,000 files)."""
    if not re.fullmatch(r"[0-9A-Za-z_-]+", token):
        raise ValueError(f"not a submission token: {token!r}")
    return f"tmp/t.{token[:16]}"


def small_tar(
    files: list[DataFile], token: str, trees: list[Tree], progress: Callable[[int], None] | None = None
) -> LocalTar:
    """The stream for `unpack_command`, store-relative: the small files, each named by its place
    under the attempt dir `tmp/t.TOKEN/` (`ab/HASH`, mode 0400, mtime now: gc keeps what a job may be
    about to link) and expected to hash to HASH as it is read, then the hard links of `trees`. Over
    the agent, the agent reads the files."""
    attempt = attempt_dir(token)
    now = int(time.time())
    record, link = LocalTar.file_record, LocalTar.link_record
    listing = [
        # the listing's paths are absolute already (no normpath per file: a fifth of this loop)
        record(f"{attempt}/{f.sha256[:2]}/{f.sha256}", _absolute(f.path), f.size, 0o400, now, f.sha256)
        for f in files
    ]
    new = {f.sha256 for f in files}
    listing += [link(name, target, mtime) for name, target, mtime in tree_links(attempt, trees, new)]
    return LocalTar(b"".join(listing), progress)


def _absolute(path: str | os.PathLike[str]) -> str:
    name = os.fspath(path)
    return name if name.startswith("/") else os.path.abspath(name)


def parse_stream(stdout: str) -> str | None:
    """The site's digest of the stream it unpacked whole (`STREAM DIGEST`), or None."""
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "STREAM" and _HEX.fullmatch(parts[1]):
            return parts[1]
    return None


def _finish(t: str, verify: bool) -> str:
    """In the attempt dir, with `rc` the unpacking's exit status: (with `verify`) drop each file that
    does not match its name's digest (`BAD DIGEST` after a whole stream), move the good ones into
    `sha256/` (one `mv` of the prefix dirs the store lacks, one `cp -al` into those it has: no fork per
    dir or file), then, only when the stream was whole and matched, each dataset tree into `trees/`
    by one rename (read-only dirs; one that a racing submission put there first is kept); the attempt
    dir is removed."""
    check = (
        f"{PICK_SHA256}bad_names=$(find . -type f -path './??/*' -print0 | xargs -0 -r $aif_sha256 | "
        'awk \'{ n = $2; sub(/^[*]/, "", n); h = n; sub(/.*[/]/, "", h); if ($1 != h) print n }\'); '
        'bad=0; for name in $bad_names; do rm -f -- "$name"; '
        'if [ "$rc" -eq 0 ]; then echo "BAD ${name##*/}"; bad=1; fi; done; '
        if verify
        else "bad=0; "
    )
    return (
        check
        # new prefix dirs move into sha256/ by one mv; those sha256/ has (or a racing submission made
        # meanwhile) get hard links to their files by one cp, an existing name left as it is
        + 'new=; for s in ??; do [ -d "$s" ] && [ ! -d "../../sha256/$s" ] && new="$new $s"; done; '
        '[ -z "$new" ] || mv -t ../../sha256 -- $new 2>/dev/null; '
        'left=; for s in ??; do [ -d "$s" ] && left="$left $s"; done; '
        '[ -z "$left" ] || cp -al -- $left ../../sha256/ 2>/dev/null; '
        'tbad=0; if [ "$rc" -eq 0 ] && [ "$bad" -eq 0 ] && [ -d trees ]; then for s in trees/*; do '
        '[ -d "$s" ] || continue; find "$s" -mindepth 1 -type d -exec chmod 500 -- {} + && '
        'if mv -T -- "$s" "../../$s" 2>/dev/null; then chmod 500 -- "../../$s"; '
        'elif [ ! -d "../../$s" ]; then echo "cannot put the dataset tree $s into the store" >&2; tbad=1; fi; '
        "done; fi; "
        f"cd ../.. && find {t} -type d -exec chmod u+w -- {{}} + 2>/dev/null; rm -rf -- {t}; "
        f'[ "$rc" -eq 0 ] || exit "$rc"; [ "$bad" -eq 0 ] || exit {MISMATCH_RC}; exit "$tbad"'
    )


def unpack_command(data_dir: str, token: str) -> str:
    """Unpack `small_tar`'s stream into the attempt dir, hashing it as it arrives: whole, print
    `STREAM DIGEST` and keep it there for `commit_command`; cut, store what arrived whole (each file
    checked) and exit with tar's status. HUP is ignored: after a cut, what arrived is still stored."""
    d = shlex.quote(data_dir)
    t = shlex.quote(attempt_dir(token))
    return (
        f"trap '' HUP PIPE; umask 077; cd -- {d} && mkdir -- {t} || exit 1; {PICK_SHA256}"
        # tee hands the stream to tar and, through fd 4, to the hash; tar's exit status comes back in
        # a file (the pipe's status is the hash's); tar reads 128 KiB records, each read whole (-B):
        # one write per small file, not two (10,000 files: 0.89 s of the site's CPU, not 0.94 s)
        f"s=$( {{ tee /dev/fd/4 | tar -x -m -b 256 -B -f - >&2; echo $? > {t}/.rc; }} 4>&1 | $aif_sha256 ); "
        f"rc=$(cat {t}/.rc 2>/dev/null) || rc=1; rm -f -- {t}/.rc; "
        'if [ "$rc" -eq 0 ]; then echo "STREAM ${s%% *}"; exit 0; fi; '
        f"cd -- {t} || exit 1; " + _finish(t, verify=True)
    )


def commit_command(data_dir: str, token: str, verify: bool) -> str:
    """Move what `unpack_command` left in the attempt dir into the store (`verify`: each file hashed
    again first, `BAD DIGEST` and exit MISMATCH_RC for one that does not match its name)."""
    d = shlex.quote(data_dir)
    t = shlex.quote(attempt_dir(token))
    return (
        f"trap '' HUP PIPE; umask 077; cd -- {d} || exit 1; "
        f"cd -- {t} 2>/dev/null || {{ echo 'the unpacked files are gone from {attempt_dir(token)}' >&2; exit 1; }}; "
        "rc=0; " + _finish(t, verify)
    )
