"""Moving a spec's `data:` files into the site's content-addressed store (`jobs.datastore` has the
layout and the command text), over any transport: one round trip asks what is there, one tar stream
carries the missing small files, each missing large file is written from where its partial copy
stopped. Every failure is a RemoteError (exit 3) that says what was and was not stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aifactory_cli.backends.fetching import transfer_failure
from aifactory_cli.errors import RemoteError
from aifactory_cli.jobs import datasmall as dsm
from aifactory_cli.jobs import datastore as ds
from aifactory_cli.jobs.datatree import Tree
from aifactory_cli.transport import Bulk, CommandResult, Stdin, Transport


class DataMismatch(RemoteError):
    """A file's checksum on the site is not the one computed here; `digests`: those of the files named
    (the caller drops them from its hash cache: the next submit hashes those files again)."""

    def __init__(self, message: str, hint: str, *, digests: list[str]) -> None:
        super().__init__(message, hint, queued="no")
        self.digests = tuple(digests)


@dataclass
class Sent:
    """What one submission sent into the store."""

    absolute: str
    files_sent: int = 0
    bytes_sent: int = 0  # payload bytes put on the wire (resumed files: only the rest)
    resumed: dict[str, int] = field(default_factory=dict)  # digest -> offset it resumed at
    stored_already: int = 0  # distinct contents the store already had
    trees_made: int = 0  # dataset trees put into the store (the others were there)
    via: str | None = None  # the path the large files took when not the transport's own (transport/ssh/mux.py)
    # with `send(defer_commit=True)`: the commit still to run (`jobs.datasmall.commit_command`, the
    # stream arrived whole and matched), for the caller's next round trip (`UploadPlan.add_prelude`)
    commit: str | None = None


class DataStore:
    def __init__(self, transport: Transport, site: str) -> None:
        self.transport = transport
        self.site = site

    def probe(self, data_dir: str, digests: list[str]) -> ds.Probe:
        result = self._run(ds.probe_command(data_dir), "".join(f"{h}\n" for h in digests).encode(), data_dir)
        if not result.ok:
            why = result.stderr.strip() or f"exit {result.rc}"
            raise RemoteError(
                f"cannot use the data store {data_dir} on {self.site}: {why}",
                "the store must be a directory of yours (set data_dir in a user profile to move it)",
                queued="no",
            )
        try:
            return ds.parse_probe(result.stdout)
        except ValueError as exc:
            raise RemoteError(f"the data store {data_dir} on {self.site} gave no answer: {exc}", queued="no") from exc

    def send(
        self,
        data_dir: str,
        files: list[ds.DataFile],
        probe: ds.Probe,
        token: str,
        progress: Callable[[int], None] | None = None,
        trees: list[Tree] | None = None,
        need: set[str] | None = None,
        defer_commit: bool = False,
    ) -> Sent:
        """Store every one of `files` the probe did not find (one copy per content; with `need`, only
        those: the files of a stored tree are stored), and every one of `trees` (`jobs.datatree`) it
        did not find. The large files go first: the trees link to them. `defer_commit`: a small
        files' stream that arrived whole is left for `Sent.commit` to move into the store."""
        sent = Sent(probe.absolute)
        unique: dict[str, ds.DataFile] = {}
        for f in files:
            unique.setdefault(f.sha256, f)
        missing = [f for h, f in unique.items() if h not in probe.have and (need is None or h in need)]
        sent.stored_already = len(unique) - len(missing)
        counted = [0]

        def count(n: int) -> None:
            counted[0] += n
            sent.bytes_sent += n
            if progress:
                progress(n)

        small = [f for f in missing if f.size < ds.LARGE]
        large = [f for f in missing if f.size >= ds.LARGE]
        new_trees = [t for t in trees or [] if t.digest not in probe.trees]
        bulk: Bulk = self.transport
        if large:
            from aifactory_cli.transport.ssh.mux import bulk_transport, bulk_via

            left = sum(f.size - min(probe.partial.get(f.sha256, 0), f.size) for f in large)
            bulk = bulk_transport(self.transport, left)
            sent.via = bulk_via(bulk)
        for f in large:
            offset = min(probe.partial.get(f.sha256, 0), f.size)
            if offset:
                sent.resumed[f.sha256] = offset
            result = self._run(
                ds.large_store_command(data_dir, f.sha256, offset, f.size),
                ds.file_writer(f.path, offset, count),
                data_dir,
                sent,
                len(missing),
                current=f,
                runner=bulk,
            )
            self._check(result, data_dir, {f.sha256: f}, sent, len(missing))
            sent.files_sent += 1
        if small or new_trees:
            self._send_small(data_dir, token, small, new_trees, sent, len(missing), count, defer_commit)
        return sent

    def _send_small(
        self,
        data_dir: str,
        token: str,
        small: list[ds.DataFile],
        trees: list[Tree],
        sent: Sent,
        total: int,
        count: Callable[[int], None],
        defer_commit: bool = False,
    ) -> None:
        """One tar stream, then the commit: without reading the files again on the site when its digest
        of the stream is the one written here and no file changed here while it was read
        (`jobs.datasmall`); that commit, with `defer_commit`, is left in `sent.commit`."""
        from aifactory_cli.transport.ssh.mux import bulk_transport, bulk_via

        by_digest = {f.sha256: f for f in small}
        tar = dsm.small_tar(small, token, trees, count)
        # through a live OpenSSH master (the user's, or the one this command started for its large
        # files), not one started for the tar alone: a login costs more than the 0.2 s it saves
        bulk = bulk_transport(self.transport)
        sent.via = sent.via or bulk_via(bulk)
        result = self._run(dsm.unpack_command(data_dir, token), tar, data_dir, sent, total, runner=bulk)
        self._check(result, data_dir, by_digest, sent, total)
        whole = tar.sha256 is not None and dsm.parse_stream(result.stdout) == tar.sha256
        verify = not whole or bool(tar.changed)
        if defer_commit and not verify:
            sent.commit = dsm.commit_command(data_dir, token, verify=False)
        else:
            commit = self._run(dsm.commit_command(data_dir, token, verify=verify), None, data_dir)
            changed = {name.rsplit("/", 1)[-1] for name in tar.changed}
            self._check(commit, data_dir, by_digest, sent, total, changed)
        sent.files_sent += len(small)
        sent.trees_made = len(trees)

    def _run(
        self,
        command: str,
        stdin: Stdin,
        data_dir: str,
        sent: Sent | None = None,
        total: int = 0,
        current: ds.DataFile | None = None,
        runner: Bulk | None = None,
    ) -> CommandResult:
        try:
            return (runner or self.transport).run(command, stdin=stdin)
        except Exception as exc:
            if not transfer_failure(exc):
                raise
            done = (
                f"; {sent.files_sent} of {total} file(s) stored, {sent.bytes_sent:,} bytes sent"
                + (f", {current.rel} is kept in part on the site" if current is not None else "")
                if sent is not None
                else ""
            )
            message = exc.message if isinstance(exc, RemoteError) else f"{type(exc).__name__}: {exc}"
            raise RemoteError(
                f"sending data to the store {data_dir} on {self.site} failed: {message}{done}",
                "submit again: what is stored is not sent again, and a cut file resumes where it stopped",
                queued="no",
            ) from exc

    def _check(
        self,
        result: CommandResult,
        data_dir: str,
        by_digest: dict[str, ds.DataFile],
        sent: Sent,
        total: int,
        changed: set[str] | None = None,
    ) -> None:
        """`changed`: digests of files whose bytes changed here while they were read into the stream."""
        if result.ok:
            return
        words = [ln.split() for ln in result.stdout.splitlines()]
        digests = [w[1] for w in words if len(w) == 2 and w[0] == "BAD" and w[1] in by_digest]
        bad = [by_digest[h].rel for h in digests]
        if changed and digests and set(digests) <= changed:
            raise DataMismatch(
                f"{', '.join(bad)} changed on this machine while it was sent (its bytes are not the ones "
                f"hashed a moment before): not stored in {data_dir} on {self.site}; nothing was submitted",
                "submit again once the file is no longer being written",
                digests=digests,
            )
        if result.rc == ds.MISMATCH_RC or bad:
            raise DataMismatch(
                f"checksum mismatch on {self.site} for {', '.join(bad) or 'a data file'}: the copy in the store "
                f"{data_dir} is not what was sent (it was removed; nothing was submitted)",
                "submit again; if it happens again, check the file here and the site's disk",
                digests=digests,
            )
        cut = "the stream ended early (connection cut)" if result.rc == ds.CUT_RC else f"exit {result.rc}"
        raise RemoteError(
            f"storing data in {data_dir} on {self.site} failed: {result.stderr.strip() or cut}; "
            f"{sent.files_sent} of {total} file(s) stored, {sent.bytes_sent:,} bytes sent",
            "submit again: what is stored is not sent again, and a cut file resumes where it stopped",
            queued="no",
        )

    def listing(self, data_dir: str, busy_minutes: int = ds.BUSY_MINUTES) -> ds.Listing:
        result = self.transport.run(ds.list_command(data_dir, busy_minutes))
        if not result.ok:
            raise RemoteError(f"cannot list the data store {data_dir} on {self.site}: {result.stderr.strip()}")
        return ds.parse_list(result.stdout)

    def site_links(self, stores: list[str], roots: list[str], depth: int) -> ds.SiteLinks:
        """Which job dirs under `roots` link into `stores`, in one round trip."""
        if not stores or not roots:
            return ds.SiteLinks({}, [])
        result = self.transport.run(ds.links_command(stores, roots, depth))
        if not result.ok:
            raise RemoteError(f"cannot look for links into the data store on {self.site}: {result.stderr.strip()}")
        return ds.parse_links(result.stdout)

    def remove(
        self,
        data_dir: str,
        digests: list[str],
        leftovers: list[str],
        busy_minutes: int = ds.BUSY_MINUTES,
        trees: list[str] | None = None,
    ) -> None:
        if not digests and not leftovers and not trees:
            return
        result = self.transport.run(
            ds.remove_command(data_dir, busy_minutes), stdin=ds.removal_paths(digests, leftovers, trees or [])
        )
        if not result.ok:
            raise RemoteError(f"cannot remove from the data store {data_dir} on {self.site}: {result.stderr.strip()}")
