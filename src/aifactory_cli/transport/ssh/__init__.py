"""The SSH transport (paramiko): one connection per CLI command, strict host keys, ~/.ssh/config.

- `settings.py`: `SshSettings`, the profile's `ssh:` block (pydantic; no SSH stack).
- `config.py`: where to connect, `resolve_ssh` (pure: settings + ssh_config, no network).
- `hostkeys.py`: known_hosts + the profile's pinned SHA256 fingerprints, never added automatically.
- `auth.py`: key files, ssh-agent, then keyboard-interactive prompts (MFA/TOTP) at a terminal.
- `login.py`: dialling the first hop, tunnelling through jump hosts, TCP_NODELAY/QUICKACK.
- `streams.py`: a command's output cut at the marker lines, its input written into the channel.
- `connection.py`: `SshTransport`, one reused connection: commands, SFTP reads, tar streams.

paramiko is imported only inside functions of these modules (lazily), so the rest of the CLI
starts fast; this `__init__` imports nothing, so that the profile loader can import `settings`
without loading the transport's modules.
"""
