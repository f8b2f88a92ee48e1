"""Logging in to one SSH server: key files, ssh-agent, then keyboard-interactive prompts (MFA/TOTP)
or a password when a person is at a terminal."""

from __future__ import annotations

import base64
import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aifactory_cli.errors import AuthError, RemoteError
from aifactory_cli.transport.ssh.config import Endpoint, expand

if TYPE_CHECKING:
    import paramiko

DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


class PromptNeeded(Exception):
    """Raised inside paramiko's thread when the server prompts and nobody can answer."""

    def __init__(self, prompts: list[str]) -> None:
        super().__init__(", ".join(prompts))
        self.prompts = prompts


class Authenticator:
    """Key files, agent, then keyboard-interactive (or password) prompts for one server."""

    def __init__(self, transport: paramiko.Transport, hop: Endpoint, interactive: bool, site: str) -> None:
        self.t = transport
        self.hop = hop
        self.interactive = interactive
        self.site = site
        self.tried: list[str] = []
        self.notes: list[str] = []
        self.partial = False
        self.prompts_refused = 0  # keyboard-interactive answers the server refused

    def run(self) -> None:
        import paramiko

        user = self.hop.user
        try:
            allowed = self._none()
            if allowed is None:
                return
            if "publickey" in allowed:
                allowed = self._publickeys(allowed)
                if self.t.is_authenticated():
                    return
            if "keyboard-interactive" in allowed:
                self._keyboard_interactive()
            elif "password" in allowed and self.interactive:
                self._password()
        except PromptNeeded as exc:
            raise AuthError(
                f"{self.hop} asks for {', '.join(repr(p.strip()) for p in exc.prompts)}"
                f"{' after the key was accepted' if self.partial else ''} (a keyboard-interactive prompt, "
                "e.g. MFA/TOTP) and no terminal is attached to answer it",
                "run the command once from a terminal, or use a key/certificate the site accepts without a "
                "prompt (some sites offer SSH certificates valid for a day)",
                where=self.site,
            ) from exc
        except paramiko.AuthenticationException as exc:
            if not self.t.is_active():
                self.notes.append(f"the server closed the connection ({exc})")
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise RemoteError(
                f"the connection to {self.hop.address} failed during login: {exc}", where=self.site
            ) from exc
        if self.t.is_authenticated():
            return
        tried = ", ".join(self.tried) if self.tried else "no key (none found)"
        notes = f" ({'; '.join(self.notes)})" if self.notes else ""
        if self.partial and self.prompts_refused:
            raise AuthError(
                f"{self.hop.hostname}:{self.hop.port} accepted the key of '{user}' but refused the answer to its "
                f"keyboard-interactive prompt (e.g. the MFA/TOTP code) {self.prompts_refused} time(s)",
                "check the code (the device's clock, the right token for this site) and try again",
                where=self.site,
            )
        raise AuthError(
            f"{self.hop.hostname}:{self.hop.port} refused the login as '{user}'; tried {tried}{notes}",
            "check the user name (profile ssh.user / ~/.ssh/config User) and the key (ssh.identity_file / "
            "IdentityFile), and that its public key is registered with the site; "
            f"`ssh -v -p {self.hop.port} {user}@{self.hop.hostname}` shows what the server accepts",
            where=self.site,
        )

    def _none(self) -> list[str] | None:
        """Ask which methods the server allows (None: it let us in without any)."""
        import paramiko

        try:
            self.t.auth_none(self.hop.user)
            return None
        except paramiko.BadAuthenticationType as exc:
            return list(exc.allowed_types)

    def _keys(self) -> list[tuple[str, Any]]:
        """(label, key) candidates, in the order OpenSSH would roughly use, without duplicates:
        each key with its certificates (CertificateFile, `<key>-cert.pub`) first, then plain."""
        import paramiko

        keys: list[tuple[str, Any]] = []
        encrypted: list[str] = []
        files = list(self.hop.identity_files)
        explicit = bool(files)
        for path in files:
            if not os.path.isfile(path):
                self.notes.append(f"identity file {path} does not exist")
                continue
            try:
                keys += _with_certificate(path, paramiko.PKey.from_path(path))
            except (paramiko.PasswordRequiredException, TypeError):  # paramiko 5: TypeError "password-protected"
                encrypted.append(path)
            except Exception as exc:
                self.notes.append(f"cannot load {path}: {exc}")
        agent_keys = self._agent_keys()
        if self.hop.identities_only and explicit:
            wanted = {_public_blob(p) for p in files} - {None}
            agent_keys = [k for k in agent_keys if k.asbytes() in wanted]
        keys += [(f"agent key {k.fingerprint}", k) for k in agent_keys]
        if not explicit:
            for path in (expand(p) for p in DEFAULT_IDENTITIES):
                if os.path.isfile(path):
                    try:
                        keys += _with_certificate(path, paramiko.PKey.from_path(path))
                    except (paramiko.PasswordRequiredException, TypeError):
                        encrypted.append(path)
                    except Exception:
                        continue
        in_agent = {k.asbytes() for k in agent_keys}
        for path in encrypted:
            if _public_blob(path) in in_agent:
                continue  # the agent holds it unlocked: no passphrase needed (as OpenSSH)
            if not self.interactive:
                self.notes.append(
                    f"{path} is encrypted and there is no terminal to ask its passphrase (add it to ssh-agent)"
                )
                continue
            try:
                phrase = getpass.getpass(f"Passphrase for {path}: ", stream=sys.stderr)
                keys += _with_certificate(path, paramiko.PKey.from_path(path, phrase.encode()))  # type: ignore[arg-type]  # paramiko 5 wants bytes (its stubs say str)
            except Exception as exc:
                self.notes.append(f"cannot unlock {path}: {exc}")
        keys = self._certified(keys)
        seen: set[bytes] = set()
        unique = []
        for label, key in keys:
            blob = key.public_blob.key_blob if getattr(key, "public_blob", None) else key.asbytes()
            if blob not in seen:
                seen.add(blob)
                unique.append((label, key))
        return unique

    def _agent_keys(self) -> list[Any]:
        """The keys of the agent IdentityAgent names ($SSH_AUTH_SOCK by default; none: no agent)."""
        import paramiko

        where = self.hop.identity_agent
        if where == "none":
            return []
        try:
            if where is None:
                return list(paramiko.Agent().get_keys())
            return list(_socket_agent(where).get_keys())
        except Exception as exc:
            if where is not None:
                self.notes.append(f"cannot use the IdentityAgent {where}: {exc}")
            return []

    def _certified(self, keys: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """CertificateFile entries, each put in front of the key (file or agent) it certifies."""
        if not self.hop.certificate_files:
            return keys
        import copy

        out = list(keys)
        for cert_path in self.hop.certificate_files:
            try:
                cert_blob = _cert_blob(cert_path)
            except Exception as exc:
                self.notes.append(f"cannot read the certificate {cert_path}: {exc}")
                continue
            for i, (label, key) in enumerate(out):
                if getattr(key, "public_blob", None) is None and _certifies(cert_blob, key.asbytes()):
                    certified = copy.copy(key)
                    try:
                        certified.load_certificate(cert_path)
                    except Exception as exc:
                        self.notes.append(f"cannot use the certificate {cert_path}: {exc}")
                        break
                    out.insert(i, (f"{label} + certificate {cert_path}", certified))
                    break
            else:
                self.notes.append(f"no key for the certificate {cert_path}")
        return out

    def _publickeys(self, allowed: list[str]) -> list[str]:
        import paramiko

        for label, key in self._keys():
            try:
                remaining = self.t.auth_publickey(self.hop.user, key)
            except paramiko.BadAuthenticationType as exc:
                return list(exc.allowed_types)
            except paramiko.AuthenticationException:
                self.tried.append(label)
                if not self.t.is_active():
                    self.notes.append(
                        "the server closed the connection (too many keys offered? set identity_file / IdentitiesOnly)"
                    )
                    return []
                continue
            self.tried.append(label)
            if not remaining:
                return []
            self.partial = True  # the key was accepted, another factor is required
            return list(remaining)
        return allowed

    def _keyboard_interactive(self) -> None:
        interactive = self.interactive

        def handler(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
            if not prompts:
                return []
            if not interactive:
                raise PromptNeeded([p for p, _ in prompts])
            if title.strip():
                print(title.strip(), file=sys.stderr)
            if instructions.strip():
                print(instructions.strip(), file=sys.stderr)
            answers = []
            for prompt, echo in prompts:
                if echo:
                    sys.stderr.write(prompt)
                    sys.stderr.flush()
                    answers.append(sys.stdin.readline().rstrip("\n"))
                else:
                    answers.append(getpass.getpass(prompt, stream=sys.stderr))
            return answers

        import paramiko

        # like OpenSSH's NumberOfPasswordPrompts: a mistyped code gets another try at a terminal
        tries = max(1, self.hop.password_prompts) if interactive else 1
        for attempt in range(tries):
            try:
                # an exception in the handler ends paramiko's thread and is re-raised here
                self.t.auth_interactive(self.hop.user, handler)
                return
            except paramiko.AuthenticationException:
                if "keyboard-interactive" not in self.tried:
                    self.tried.append("keyboard-interactive")
                self.prompts_refused = attempt + 1
                if not self.t.is_active():
                    raise
                if attempt + 1 < tries:
                    print("Permission denied, please try again.", file=sys.stderr)

    def _password(self) -> None:
        import paramiko

        password = getpass.getpass(f"{self.hop.user}@{self.hop.hostname}'s password: ", stream=sys.stderr)
        try:
            self.t.auth_password(self.hop.user, password)
        except paramiko.AuthenticationException:
            self.tried.append("password")


def _with_certificate(path: str, key: Any) -> list[tuple[str, Any]]:
    """A key file with `<key>-cert.pub` beside it (paramiko loads the certificate with the key):
    offered as the certificate first, then as the plain key, as OpenSSH does, so the same key still
    logs in to sites that do not know the certificate's CA."""
    if getattr(key, "public_blob", None) is None:
        return [(path, key)]
    import copy

    plain = copy.copy(key)
    plain.public_blob = None
    return [(f"{path} (certificate)", key), (path, plain)]


def _public_blob(private_path: str) -> bytes | None:
    """The public key of a key file: from `<key>.pub`, else from the OpenSSH private key file's
    header, which is not encrypted (an encrypted key without .pub still matches the agent's copy)."""
    try:
        parts = Path(private_path + ".pub").read_text().split()
        return base64.b64decode(parts[1])
    except Exception:
        pass
    try:
        text = Path(private_path).read_text()
        body = text.split("-----BEGIN OPENSSH PRIVATE KEY-----")[1].split("-----END")[0]
        data = base64.b64decode("".join(body.split()))
        magic = b"openssh-key-v1\0"
        if not data.startswith(magic):
            return None
        pos = len(magic)
        for _ in range(3):  # cipher name, kdf name, kdf options
            pos += 4 + int.from_bytes(data[pos : pos + 4], "big")
        pos += 4  # number of keys
        size = int.from_bytes(data[pos : pos + 4], "big")
        return data[pos + 4 : pos + 4 + size]
    except Exception:
        return None


def _cert_blob(path: str) -> bytes:
    return base64.b64decode(Path(path).read_text().split()[1])


def _ssh_strings(blob: bytes, count: int) -> int:
    """The offset after the first `count` SSH strings of `blob`."""
    pos = 0
    for _ in range(count):
        pos += 4 + int.from_bytes(blob[pos : pos + 4], "big")
    return pos


def _certifies(cert: bytes, key_blob: bytes) -> bool:
    """Whether OpenSSH certificate `cert` is for the public key `key_blob`: a certificate is
    string(cert type) string(nonce) <the key's fields> ...; a key blob is string(type) <fields>."""
    try:
        fields = key_blob[_ssh_strings(key_blob, 1) :]
        return bool(fields) and cert[_ssh_strings(cert, 2) :].startswith(fields)
    except Exception:
        return False


def _socket_agent_class() -> Any:
    import paramiko
    from paramiko.agent import AgentSSH

    class SocketAgent(AgentSSH):
        """An ssh-agent at a given socket path (IdentityAgent), not $SSH_AUTH_SOCK."""

        def __init__(self, path: str) -> None:
            import socket as socket_module

            super().__init__()
            conn = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
            try:
                conn.connect(path)
            except OSError as exc:
                conn.close()
                raise paramiko.SSHException(f"cannot connect to the agent socket {path}: {exc.strerror}") from exc
            self._connect(conn)  # type: ignore[attr-defined]  # paramiko stubs lack it

    return SocketAgent


def _socket_agent(path: str) -> Any:
    return _socket_agent_class()(path)


def stdin_isatty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False
