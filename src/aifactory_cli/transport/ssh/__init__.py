"""The SSH transport (paramiko): one connection per CLI command, strict host keys, ~/.ssh/config.

- `settings.py`: `SshSettings`, the profile's `ssh:` block (pydantic; no SSH stack).
- `config.py`: where to connect, `resolve_ssh` (settings + ssh_config, no network).
- `openssh.py`: a host's ssh_config settings as OpenSSH resolves them (`ssh -G`), or paramiko's
  reading where no OpenSSH client is installed.
- `hostkeys.py`: known_hosts + the profile's pinned SHA256 fingerprints, never added automatically.
- `auth.py`: key files, ssh-agent, then keyboard-interactive prompts (MFA/TOTP) at a terminal.
- `login.py`: dialling the first hop (or its ProxyCommand), tunnelling through jump hosts,
  TCP_NODELAY/QUICKACK.
- `streams.py`: a command's output cut at the marker lines, its input written into the channel.
- `connection.py`: `SshTransport`, one reused connection: commands, tar streams.
- `files.py`: its file reads (SFTP, or `tail -c` on the command channel under `MaxSessions 1`).

paramiko is imported only inside functions of these modules (lazily), so the rest of the CLI
starts fast; this `__init__` imports nothing, so that the profile loader can import `settings`
without loading the transport's modules.
"""
