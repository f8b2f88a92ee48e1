"""A site's content-addressed data store, for a spec's `data:` entries: every file is kept once, under
its sha256 (computed here, checked on the site with `openssl dgst` or `sha256sum`), and job dirs link to it read-only.

    DATA/sha256/ab/abcdef...    one file per content, mode 0400, in 0700 dirs (the user's alone)
    DATA/trees/T/...            a `data:` directory: hard links to sha256/ files, dirs 0500 (`jobs.datatree`)
    DATA/tmp/HASH.part          a large file on its way: the next attempt resumes at its size
    DATA/tmp/t.TOKEN/ab/HASH    the small files of one attempt, moved into sha256/ once checked
    DATA/tmp/t.TOKEN/trees/T    a tree being made, moved into trees/ once all its files are stored

Small files travel in one tar stream per submission (`jobs.datasmall`); each large one (>= LARGE bytes) is written
at its offset with `dd` (seek, no truncation), so a cut transfer resumes inside the file, and two
submissions that send the same file at once write the same bytes at the same places. A file enters
`sha256/` only by a rename after its checksum matched, so what a job reads there is always whole.

Here: what runs on the site (command text, quoted) and its parsing, and the local side (hashing
with a cache of unchanged files, the streams). Moving bytes is `backends.datastore`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aifactory_cli.jobs.datatree import TREES
from aifactory_cli.transport import LocalFile

# the site's sha256 tool, picked once per command (re-exported: the store's commands and fetch use it)
from aifactory_cli.transport.tofile import EMPTY_SHA256 as EMPTY_SHA256
from aifactory_cli.transport.tofile import PICK_SHA256 as PICK_SHA256

LARGE = 8 * 1024 * 1024  # files this size and up are sent one by one, resumable inside the file
CHUNK = 1024 * 1024
MISMATCH_RC = 96  # a file's checksum on the site is not the one computed here
CUT_RC = 95  # a large file's stream ended early (a cut connection): its partial copy stays
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class DataFile:
    path: str | Path  # local file
    rel: str  # where the job sees it, job-dir relative
    size: int
    sha256: str

    @property
    def stored(self) -> str:
        """Its place in the store, store-relative."""
        return stored_name(self.sha256)


def stored_name(digest: str) -> str:
    if not _HEX.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return f"sha256/{digest[:2]}/{digest}"


def site_path(template_path: str) -> str:
    """A store path as the site's commands take it: `$HOME/` and `~/` dropped (commands start there)."""
    for prefix in ("$HOME/", "~/", "${HOME}/"):
        if template_path.startswith(prefix):
            return template_path[len(prefix) :] or "."
    return template_path


# --- the local side -------------------------------------------------------------------------------------


class HashCache:
    """sha256 of local files by (path, size, mtime, inode, ctime), kept in the state dir: an unchanged
    100 GB dataset is not read again at the next submit. The ctime (which no one can set back, as git's
    index uses it) catches a file rewritten in place with its old mtime put back (`touch -r` or `-d`
    after the write, `rsync --inplace -t`): with size, mtime and inode alone its old digest stood, and
    a job got the old bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.changed = False
        try:
            self.data: dict[str, list[Any]] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def digest(
        self, path: str | Path, progress: Callable[[int], None] | None = None, st: os.stat_result | None = None
    ) -> tuple[int, str]:
        """The file's size and sha256; `st`: its stat, when the listing has it (`jobs.staging.collect_files`)."""
        name = os.fspath(path)
        if st is None:
            st = os.stat(name)
        # keyed by the absolute path as named (no realpath: an lstat per component, 0.6 s for 10,000
        # files; no normpath of a path already absolute: a third of the time of a cached file); the
        # inode and mtime in the stamp still catch a link that now points elsewhere
        key = name if name.startswith("/") else os.path.abspath(name)
        known = self.data.get(key)
        if (
            known
            and known[0] == st.st_size
            and known[1] == st.st_mtime_ns
            and known[2] == st.st_ino
            and known[4:] == [st.st_ctime_ns]
            and isinstance(known[3], str)
            and _HEX.fullmatch(known[3])
        ):
            return st.st_size, known[3]
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(CHUNK):
                h.update(block)
                if progress:
                    progress(len(block))
        self.data[key] = [st.st_size, st.st_mtime_ns, st.st_ino, h.hexdigest(), st.st_ctime_ns]
        self.changed = True
        return st.st_size, h.hexdigest()

    def forget(self, paths: Sequence[str | Path]) -> None:
        """Drop these files' entries and save: the next `digest` reads each of them again."""
        for path in paths:
            name = os.fspath(path)
            self.changed |= self.data.pop(name if name.startswith("/") else os.path.abspath(name), None) is not None
        self.save()

    def save(self) -> None:
        if not self.changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)


def hash_files(
    files: Sequence[tuple[str | Path, str, os.stat_result | None]],
    cache: HashCache,
    progress: Callable[[int], None] | None = None,
) -> list[DataFile]:
    """`files`: (path, rel, its stat or None) as `jobs.staging.collect_files` lists them."""
    out = []
    for path, rel, st in files:
        size, sha = cache.digest(path, progress, st)
        out.append(DataFile(path, rel, size, sha))
    cache.save()
    return out


def file_writer(path: str | Path, offset: int, progress: Callable[[int], None] | None = None) -> LocalFile:
    """The file from `offset` on, as a stream (over the agent, the agent reads it)."""
    return LocalFile(Path(path), offset, progress)


# --- what runs on the site ------------------------------------------------------------------------------


def probe_command(data_dir: str) -> str:
    """Create the store (private) if needed, print its physical path, then for each digest on stdin
    (one a line) `H DIGEST` when it is stored (its mtime set to now, in one `touch` for all: gc keeps
    what a submission found in the last BUSY_MINUTES, as the job may be about to link it) or
    `P DIGEST SIZE` when a partial copy is there (not looked for after `s:`: a small file's digest,
    `jobs.datatree.probe_lines`: half the lookups); for a `tree:T` line, `T T` when that dataset tree is
    stored (touched too), and then the digests up to the next `end` line are skipped (a stored tree's
    files are stored: gc keeps what a kept tree links). A store dir that exists but is not the user's
    fails at `chmod`."""
    d = shlex.quote(data_dir)
    return (
        f"umask 077 && mkdir -p -- {d}/sha256 {d}/tmp {d}/{TREES} && cd -- {d} && "
        f"chmod 700 . sha256 tmp {TREES} && pwd -P && "
        # awk turns the digests into the paths to look for (bash's `read` takes a syscall a byte: 0.6 s
        # for 10,000 digests), one `stat` per few thousand paths says which are there
        f"{{ awk {shlex.quote(_PROBE_PATHS)} | xargs -r stat -c '%s %n' -- 2>/dev/null | "
        f"awk {shlex.quote(_PROBE_ANSWERS)} 3>&1 >&4 | xargs -r touch -c -m -- || :; }} 4>&1"
    )


# the probe's stdin -> store-relative paths, one a line (names are hex digits only)
_PROBE_PATHS = """function hex(s) { return length(s) == 64 && s !~ /[^0-9a-f]/ }
/^tree:/ { t = substr($0, 6); skip = hex(t) && system("[ -d trees/" t " ]") == 0; if (skip) print "trees/" t; next }
$0 == "end" { skip = 0; next }
{ d = $0; part = 1; if (substr(d, 1, 2) == "s:") { d = substr(d, 3); part = 0 } }
skip || !hex(d) { next }
{ print "sha256/" substr(d, 1, 2) "/" d; if (part) print "tmp/" d ".part" }"""
# `SIZE PATH` of each path there -> the probe's answer lines; the paths to touch -> fd 3
_PROBE_ANSWERS = """$2 ~ /^trees[/]/ { print "T " substr($2, 7); print $2 > "/dev/fd/3"; next }
$2 ~ /^sha256[/]/ { print "H " substr($2, 11); print $2 > "/dev/fd/3"; next }
$2 ~ /^tmp[/]/ { print "P " substr($2, 5, 64) " " $1 }"""


@dataclass
class Probe:
    absolute: str
    have: set[str]
    partial: dict[str, int]
    trees: set[str] = field(default_factory=set)  # dataset trees stored


def parse_probe(stdout: str) -> Probe:
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("/"):
        raise ValueError(f"no store path in the answer: {stdout[:200]!r}")
    have: set[str] = set()
    partial: dict[str, int] = {}
    trees: set[str] = set()
    for ln in lines[1:]:
        parts = ln.split()
        if len(parts) == 2 and parts[0] == "H" and _HEX.fullmatch(parts[1]):
            have.add(parts[1])
        elif len(parts) == 3 and parts[0] == "P" and _HEX.fullmatch(parts[1]) and parts[2].isdigit():
            partial[parts[1]] = int(parts[2])
        elif len(parts) == 2 and parts[0] == "T" and _HEX.fullmatch(parts[1]):
            trees.add(parts[1])
    return Probe(lines[0], have, partial, trees)


FOLLOW_CORES = 2  # a large upload is hashed while it arrives only on a login node with more cores


def large_store_command(data_dir: str, digest: str, offset: int, size: int) -> str:
    """Write stdin into `tmp/DIGEST.part` from `offset` (no truncation), then, once it is `size`
    bytes long, check it and rename it into `sha256/`. Exit CUT_RC (`CUT DIGEST SIZE`) when the
    stream ended early, MISMATCH_RC (`BAD DIGEST`, the partial copy removed) on a wrong checksum.

    On a login node with more than FOLLOW_CORES cores the sha256 is taken while the file arrives:
    `tail -f` follows the part from its first byte (what an earlier, cut upload left included) as `dd`
    writes it, and `head -c SIZE` ends it at the size (or `--pid` when dd is gone early); with cores to
    spare that costs no time. A follower's digest that does not match is checked once more by reading
    the part, before the copy is called bad. With fewer cores the part is read once after it was
    written (1 GiB: 0.9 s on the test bed's 2 cores, where the follower slowed the write by 2.8 s)."""
    stored = stored_name(digest)
    part = f"tmp/{digest}.part"
    d = shlex.quote(data_dir)
    return (
        f"trap '' HUP PIPE; umask 077; cd -- {d} || exit 1; {PICK_SHA256}: >> {part} || exit 1; "
        # each read from the pipe is written as it came (no iflag=fullblock: waiting to fill 1 MiB before
        # each write stalled sshd's side of the pipe, 8.7-11.9 s a GiB on the bed against 5.4-5.8 s);
        # the offset is in bytes, so a short block shifts nothing. In the background, stdin given
        # explicitly (an asynchronous command's stdin is /dev/null otherwise)
        f"exec 3<&0; dd of={part} bs={CHUNK} seek={int(offset)} oflag=seek_bytes conv=notrunc status=none "
        "<&3 3<&- & aif_dd=$!; exec 3<&-; "
        # the follower only where the login node has cores to spare: on 2 cores (the test bed) its three
        # copies through 8 KiB pipes slowed the upload itself (1 GiB: 5.3-5.4 s, against 3.4-3.7 s with
        # the file read once after it was written; the write alone 2.5-2.8 s)
        f'if [ "$(nproc 2>/dev/null || echo 1)" -gt {FOLLOW_CORES} ]; then '
        f"s=$(tail -c +1 -s 0.1 --pid=$aif_dd -f -- {part} 2>/dev/null | head -c {int(size)} | $aif_sha256); "
        "else s=; fi; "
        'wait "$aif_dd"; rc=$?; '
        f"if [ -f {stored} ]; then rm -f -- {part}; exit 0; fi; "
        f'[ "$rc" -eq 0 ] || exit "$rc"; n=$(wc -c < {part}) || {{ [ -f {stored} ]; exit $?; }}; '
        f'if [ "$n" -lt {int(size)} ]; then echo "CUT {digest} $n"; exit {CUT_RC}; fi; '
        f'if [ "${{s%% *}}" != {digest} ]; then s=$($aif_sha256 < {part}) || {{ [ -f {stored} ]; exit $?; }}; fi; '
        f'if [ "$n" -eq {int(size)} ] && [ "${{s%% *}}" = {digest} ]; then '
        # a racing submission of the same file may have moved the part into place meanwhile: fine
        f"chmod 400 {part} 2>/dev/null; mkdir -p -- {stored.rsplit('/', 1)[0]} && "
        f"{{ mv -f -- {part} {stored} 2>/dev/null || [ -f {stored} ]; }}; exit $?; fi; "
        f"[ -f {stored} ] && exit 0; rm -f -- {part}; echo 'BAD {digest}'; exit {MISMATCH_RC}"
    )


BUSY_MINUTES = 60  # a tmp/ part changed this recently may be an upload in progress: gc keeps it


def list_command(data_dir: str, busy_minutes: int = BUSY_MINUTES) -> str:
    """`O SIZE DIGEST INODE` for every stored file (`R ...`: stored or found by a submission in the last
    BUSY_MINUTES, by its mtime: a job may be about to link it); `T TREE` for every dataset tree (`RT`:
    recent) and `I INODE TREE/PATH` for every file in it (its inode is a stored file's); for each entry
    under tmp/ (a cut transfer's part): `PART SIZE NAME`, or `BUSY SIZE NAME` when it or anything in it
    changed (ctime: tar cannot set it back) in the last BUSY_MINUTES; a store that does not exist lists
    nothing."""
    d = shlex.quote(data_dir)
    m = int(busy_minutes)
    return (
        f"[ -d {d} ] || exit 0; cd -- {d} && pwd -P && "
        "{ [ ! -d sha256 ] || find sha256 -type f "
        f"\\( -mmin -{m} -printf 'R %s %f %i\\n' -o -printf 'O %s %f %i\\n' \\); }} && "
        f"{{ [ ! -d {TREES} ] || {{ find {TREES} -mindepth 1 -maxdepth 1 -type d "
        f"\\( -mmin -{m} -printf 'RT %f\\n' -o -printf 'T %f\\n' \\) && "
        f"find {TREES} -mindepth 2 -type f -printf 'I %i %P\\n'; }}; }} && "
        '{ [ ! -d tmp ] || for e in tmp/* tmp/.[!.]*; do [ -e "$e" ] || continue; '
        f'k=PART; [ -z "$(find "$e" -cmin -{m} -print -quit 2>/dev/null)" ] || k=BUSY; '
        'echo "$k $(du -sb -- "$e" | cut -f1) ${e#tmp/}"; done; }'
    )


@dataclass
class Listing:
    absolute: str | None
    files: dict[str, int]  # digest -> size
    leftovers: dict[str, int]  # tmp/ name -> size, unchanged for BUSY_MINUTES
    busy: dict[str, int] = field(default_factory=dict)  # tmp/ name -> size, changed recently: kept
    recent: set[str] = field(default_factory=set)  # digests stored or probed in the last BUSY_MINUTES
    inodes: dict[str, int] = field(default_factory=dict)  # digest -> its file's inode
    trees: dict[str, set[int]] = field(default_factory=dict)  # dataset tree -> the inodes it links
    recent_trees: set[str] = field(default_factory=set)  # made or found by a submission lately


def parse_list(stdout: str) -> Listing:
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    absolute = lines[0] if lines and lines[0].startswith("/") else None
    listing = Listing(absolute, {}, {})
    for ln in lines[1 if absolute else 0 :]:
        parts = ln.split(" ", 3)
        kind = parts[0]
        if kind in ("O", "R") and len(parts) == 4 and parts[1].isdigit() and _HEX.fullmatch(parts[2]):
            listing.files[parts[2]] = int(parts[1])
            if parts[3].isdigit():
                listing.inodes[parts[2]] = int(parts[3])
            if kind == "R":
                listing.recent.add(parts[2])
        elif kind in ("T", "RT") and len(parts) == 2 and _HEX.fullmatch(parts[1]):
            listing.trees.setdefault(parts[1], set())
            if kind == "RT":
                listing.recent_trees.add(parts[1])
        elif kind == "I" and len(parts) >= 3 and parts[1].isdigit():
            tree = ln.split(" ", 2)[2].split("/", 1)[0]
            if _HEX.fullmatch(tree):
                listing.trees.setdefault(tree, set()).add(int(parts[1]))
        elif kind in ("PART", "BUSY") and len(parts) == 3 and parts[1].isdigit():
            (listing.leftovers if kind == "PART" else listing.busy)[parts[2]] = int(parts[1])
    return listing


def _glob(path: str) -> str:
    """`path` as a find pattern matching itself alone."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", path)


# find's errors -> `!` (the root was not read whole), but for a dir that vanished while find went
# through it: another job dir removed meanwhile links to nothing any more (gc saw every such race as
# an unreadable root and freed nothing; `-ignore_readdir_race` does not cover a dir, findutils 4.9)
_UNREAD = '!/: No such file or directory$/ { bad = 1 } END { if (bad) print "!" }'


def links_command(stores: list[str], roots: list[str], depth: int) -> str:
    """Which job dirs on the site link into the stores (physical paths, as `pwd -P` gives them), in
    one command: under each root of job dirs (one that does not exist is skipped), every symlink whose
    target is in a store's `sha256/` or `trees/`, as `STORE<TAB>DIGEST<TAB>JOBDIR` (`tree:T` for a tree)
    once per job dir (the root's physical path and the first `depth` components below it; a link above
    that depth: the root itself); `UNREAD<TAB>ROOT` when find could not read all of a root (then what
    it holds is not known; a dir that vanished meanwhile does not count)."""
    match = " -o ".join(f"-lname {shlex.quote(_glob(s) + sub)}" for s in stores for sub in ("/sha256/*", f"/{TREES}/*"))
    prune = " -o ".join(f"-path {shlex.quote(_glob(s))}" for s in stores)
    awk = (
        '$0 == "!" { print "UNREAD\t" ENVIRON["R"]; next } '
        '{ t = $1; rest = substr($0, length(t) + 2); n = split(rest, a, "/"); '
        'j = ENVIRON["R"]; if (n > d) for (i = 1; i <= d; i++) j = j "/" a[i]; '
        'h = t; sub(/.*\\//, "", h); s = t; sub(/\\/sha256\\/[^\\/]*\\/[^\\/]*$/, "", s); '
        'if (t ~ /\\/trees\\/[^\\/]*$/) { s = t; sub(/\\/trees\\/[^\\/]*$/, "", s); h = "tree:" h } '
        'print s "\t" h "\t" j }'
    )
    parts = [
        f"( cd -- {shlex.quote(r)} 2>/dev/null || exit 0; R=$(pwd -P) && export R && "
        f'{{ LC_ALL=C find "$R" -mindepth 1 \\( {prune} \\) -prune -o -type l \\( {match} \\) '
        f"-printf '%l\\t%P\\n' 2>&1 >&3 3>&- | awk {shlex.quote(_UNREAD)} >&3; }} 3>&1 | "
        f"awk -F '\\t' -v d={int(depth)} {shlex.quote(awk)} )"
        for r in roots
    ]
    return "{ " + "; ".join(parts or [":"]) + "; } | sort -u"


@dataclass
class SiteLinks:
    users: dict[tuple[str, str], set[str]]  # (store, digest or tree:T) -> job dirs on the site linking to it
    unreadable: list[str]  # roots find could not read whole


def parse_links(stdout: str) -> SiteLinks:
    links = SiteLinks({}, [])
    for ln in stdout.splitlines():
        parts = ln.split("\t")
        if len(parts) == 2 and parts[0] == "UNREAD":
            links.unreadable.append(parts[1])
        elif len(parts) == 3 and _HEX.fullmatch(parts[1].removeprefix("tree:")) and parts[0].startswith("/"):
            links.users.setdefault((parts[0], parts[1]), set()).add(parts[2])
    return links


def remove_command(data_dir: str, busy_minutes: int = BUSY_MINUTES) -> str:
    """Remove the store-relative paths given on stdin (NUL-separated), and empty prefix dirs; a tmp/
    part changed, or a stored file or tree stored or probed, in the last BUSY_MINUTES (since it was
    listed) is kept. A tree's read-only dirs are made writable first (only its dirs: its files are the
    stored files' inodes)."""
    d = shlex.quote(data_dir)
    m = int(busy_minutes)
    return (
        f"cd -- {d} && xargs -0 -r sh -c 'for p; do case $p in tmp/*) "
        f'[ -z "$(find "$p" -cmin -{m} -print -quit 2>/dev/null)" ] || continue;; '
        f'{TREES}/*) [ -z "$(find "$p" -maxdepth 0 -mmin -{m} -print -quit 2>/dev/null)" ] || continue; '
        'find "$p" -type d -exec chmod u+w -- {} + || exit 1;; '
        f'*) [ -z "$(find "$p" -mmin -{m} -print -quit 2>/dev/null)" ] || continue;; esac; '
        'rm -rf -- "$p" || exit 1; done\' sh && find sha256 -mindepth 1 -type d -empty -delete'
    )


def removal_paths(digests: list[str], leftovers: list[str], trees: Sequence[str] = ()) -> bytes:
    """Trees first: a file of a freed tree is freed only once no tree links it."""
    paths = [f"{TREES}/{t}" for t in trees if _HEX.fullmatch(t)]
    paths += [stored_name(h) for h in digests]
    for name in leftovers:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"not a leftover name: {name!r}")
        paths.append(f"tmp/{name}")
    return b"".join(p.encode() + b"\0" for p in paths)
