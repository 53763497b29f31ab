"""Real servers for tests and benchmarks: an OpenSSH sshd on loopback and Podman containers.

No mocks: `start_sshd` runs the system's `/usr/sbin/sshd` with a private config, keys and log in a
work directory; `start_podman` builds a tiny busybox image without a registry and keeps all of
Podman's storage and state in a work directory. Plain module (no pytest import), so `bench/` scripts
can use it after `sys.path.insert(0, "<repo>/tests")`. See /work/shared/notes/sshd.md and containers.md
for why each setting is there.

Process groups, checked on this machine (Debian 12: OpenSSH 9.2p1, Podman 4.3.1 with runc 1.1.5):

* SSH, exec channel without a pty: sshd's session child calls `setsid()` and then runs the user's login
  shell as `SHELL -c COMMAND`, so that shell is a session and process group leader. Whether `sh` is that
  leader depends on the login shell: bash 5.2 execs the last simple command in place (`sh -s` and also
  `cd /x && sh -s`), so there `$$` == pgid == sid (parent: the per-session sshd), but with `sh -s; true`,
  or a dash login shell (`dash -c 'sh -s'` forks), `sh` is a child in the shell's group and `$$` != pgid.
  Send `exec sh -s` (the leader then becomes `sh` under every shell), or read the group from
  `/proc/$$/stat` (field 5) / `ps -o pgid= -p $$` instead of assuming `$$`.
* Podman, `podman exec -i NAME sh -s`: runc starts the exec'd process in a new session, so it is a
  session and process group leader too: `$$` == pgid == sid (ppid 0: its parent is outside the
  container's pid namespace). Every child the hook starts stays in that group, and a second
  `podman exec NAME kill -TERM -PGID` ends them all (the first `podman exec` then exits 143).

Which `kill` to run for a group (checked with strace in a throw-away pid namespace):
* procps-ng 4.0.2's /bin/kill (Debian 12 hosts, Debian-based images) misparses `kill -TERM -12345`: it
  sends the signal to `-1` (the first digit), i.e. to EVERY process the caller may signal; as root that
  is the whole machine or the whole container. Only `kill -TERM -- -12345` is right there.
* busybox `kill` (applet and `sh` builtin) rejects `--` ("invalid number '--'", exit 1) but still
  signals the group; dash's builtin rejects `kill -TERM -- -PGID` without signalling anything.
* `sh -c 'kill -TERM -PGID'` (the shell's builtin: dash, bash, busybox ash) is right everywhere.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import os
import resource
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from dataclasses import dataclass
from typing import Literal

SSHD = "/usr/sbin/sshd"
IMAGE = "localhost/juncture-mini:latest"
CATATONIT = "/usr/libexec/podman/catatonit"  # podman's default init_path for --init


# --------------------------------------------------------------------------------------------- sshd


def sshd_binary() -> str | None:
    """Path of OpenSSH's sshd, or None. Looks in /usr/sbin too, which is often not on PATH."""
    if os.access(SSHD, os.X_OK):
        return SSHD
    return shutil.which("sshd")


def _pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _keygen(path: str, comment: str) -> None:
    for stale in (path, path + ".pub"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _known_hosts_line(port: int, pub_path: str, address: str = "127.0.0.1") -> str:
    with open(pub_path) as handle:
        kind, blob = handle.read().split()[:2]
    return f"[{address}]:{port} {kind} {blob}\n"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@dataclass
class SshServer:
    """A running sshd on 127.0.0.1:port that lets `user` in with `client_key`."""

    port: int
    address: str
    user: str
    client_key: str
    known_hosts: str
    host_key_fingerprint: str
    pid: int
    log: str
    workdir: str

    def alive(self) -> bool:
        return _pid_alive(self.pid)

    def ssh_options(self, **extra: object) -> dict[str, object]:
        """The `ssh:` settings of a stage whose hosts are this server."""
        return {
            "port": self.port,
            "identity_file": self.client_key,
            "known_hosts_file": self.known_hosts,
            "agent": False,
            **extra,
        }

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the listener and wait until it is gone (SIGKILL after `timeout`).

        Open sessions have processes of their own and end with their clients.
        """
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for sig in (signal.SIGKILL, None):
            deadline = time.monotonic() + timeout
            while _pid_alive(self.pid):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            else:
                return
            if sig is None:
                raise RuntimeError(f"sshd (pid {self.pid}) still there after SIGTERM and SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def wrong_known_hosts(self) -> str:
        """A known_hosts file that pins a different, freshly made host key for this server's address."""
        key = os.path.join(self.workdir, "other_host_key")
        _keygen(key, "not-this-server")
        path = os.path.join(self.workdir, "known_hosts.wrong")
        with open(path, "w") as handle:
            handle.write(_known_hosts_line(self.port, key + ".pub", self.address))
        return path


# quiet_shell: root's ~/.bashrc on these machines runs `pyenv init`. bash (built with SSH_SOURCE_BASHRC, as
# Debian's is) sources ~/.bashrc for a non-interactive `-c` command when SSH_CLIENT is set and its shell
# level is below 2; it adds one to the inherited SHLVL before it looks, so `SetEnv SHLVL=1` makes it skip
# the file. Checked here: without it the remote command sees SHLVL=1 and the `pyenv` shell function, and
# `ssh host true` (OpenSSH client, curve25519) takes 0.27-0.30 s; with it the command sees SHLVL=2, no
# pyenv, and takes 0.14 s. Hosts whose login shell is not bash are unaffected either way.
_SSHD_CONFIG = """\
Port {port}
ListenAddress {address}
HostKey {host_key}
AuthorizedKeysFile {authorized_keys}
PidFile {pid_file}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
StrictModes no
PermitRootLogin yes
MaxStartups {max_startups}
MaxSessions {max_sessions}
Subsystem sftp internal-sftp
"""


def start_sshd(
    workdir: str,
    *,
    max_startups: str = "10:30:100",
    max_sessions: int = 10,
    quiet_shell: bool = True,
    set_env: dict[str, str] | None = None,
) -> SshServer:
    """Start sshd on a free 127.0.0.1 port with fresh host and client keys kept in `workdir`.

    The defaults are sshd's own throttles (MaxStartups 10:30:100, MaxSessions 10); benchmarks raise them.
    `quiet_shell` adds `SetEnv SHLVL=1` so that bash skips the user's ~/.bashrc for SSH commands;
    `set_env` more variables for every session (values without spaces or quotes).
    """
    sshd = sshd_binary()
    if sshd is None:
        raise RuntimeError("sshd not found (Debian package openssh-server)")
    os.makedirs(workdir, exist_ok=True)
    workdir = os.path.abspath(workdir)
    host_key = os.path.join(workdir, "ssh_host_ed25519_key")
    client_key = os.path.join(workdir, "id_ed25519")
    _keygen(host_key, "juncture-test-host")
    _keygen(client_key, "juncture-test-client")
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", host_key + ".pub"], check=True, capture_output=True, text=True
    ).stdout.split()[1]
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    config = os.path.join(workdir, "sshd_config")
    pid_file = os.path.join(workdir, "sshd.pid")
    log = os.path.join(workdir, "sshd.log")
    address = "127.0.0.1"

    for _attempt in range(20):
        port = _free_port()
        with open(config, "w") as handle:
            handle.write(
                _SSHD_CONFIG.format(
                    port=port,
                    address=address,
                    host_key=host_key,
                    authorized_keys=client_key + ".pub",
                    pid_file=pid_file,
                    max_startups=max_startups,
                    max_sessions=max_sessions,
                )
            )
            variables = {**({"SHLVL": "1"} if quiet_shell else {}), **(set_env or {})}
            if variables:
                handle.write("SetEnv " + " ".join(f"{k}={v}" for k, v in variables.items()) + "\n")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pid_file)
        log_start = os.path.getsize(log) if os.path.exists(log) else 0
        # sshd checks its config, daemonizes (the parent exits 0), then binds and writes the PidFile; a bind
        # failure shows only in the log, as "Cannot bind any address", and the daemon exits.
        done = subprocess.run(
            [sshd, "-f", config, "-E", log], stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"sshd exited {done.returncode}: {done.stderr}\n{_tail(log)}")
        pid = _wait_pid_file(pid_file, log, log_start)
        if pid is None:
            continue  # someone took the port between our probe and sshd's bind: another port
        server = SshServer(
            port=port,
            address=address,
            user=getpass.getuser(),
            client_key=client_key,
            known_hosts=os.path.join(workdir, "known_hosts"),
            host_key_fingerprint=fingerprint,
            pid=pid,
            log=log,
            workdir=workdir,
        )
        with open(server.known_hosts, "w") as handle:
            handle.write(_known_hosts_line(port, host_key + ".pub", address))
        _wait_port(server)
        return server
    raise RuntimeError(f"sshd could not bind a free port on {address}:\n{_tail(log)}")


def _wait_pid_file(pid_file: str, log: str, log_start: int, timeout: float = 5.0) -> int | None:
    """The daemon's pid once it listens, or None when the log says it could not bind."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(pid_file) as handle:
                text = handle.read().strip()
            if text.isdigit():
                return int(text)
        except FileNotFoundError:
            pass
        with contextlib.suppress(FileNotFoundError), open(log, "rb") as handle:
            handle.seek(log_start)
            if b"Cannot bind any address" in handle.read():
                return None
        time.sleep(0.005)
    raise RuntimeError(f"sshd wrote no {pid_file} within {timeout} s:\n{_tail(log)}")


def _wait_port(server: SshServer, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((server.address, server.port), timeout=0.5):
                return
        except OSError as error:
            if not server.alive():
                raise RuntimeError(f"sshd (pid {server.pid}) died:\n{_tail(server.log)}") from error
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"sshd port {server.port} not accepting after {timeout} s: {error}\n{_tail(server.log)}"
                ) from error
            time.sleep(0.01)


# ------------------------------------------------------------------------------------------- podman

# Applets the tests rely on; start_podman links every applet the busybox has and checks these are among them.
NEEDED_APPLETS = frozenset(
    {"sh", "ps", "kill", "sleep", "cat", "env", "mkdir", "rm", "chmod", "printf", "setsid", "mktemp"}
    | {"echo", "true", "false", "ls", "test", "id", "grep", "awk"}
)

# Debian's busybox-static (1.35) has no pgrep applet: this shim covers `pgrep [-f] [-g PGID] [PATTERN]`
# (PATTERN is an extended regex on the command name, or with -f on the whole command line).
_PGREP_SHIM = r"""#!/bin/sh
# pgrep shim (busybox here has no pgrep): pgrep [-f] [-g PGID] [PATTERN]; exit 0 when something matched.
full=0 group=
while [ $# -gt 0 ]; do
  case $1 in
    -f) full=1 ;;
    -g) group=$2; shift ;;
    --) shift; break ;;
    -*) echo "pgrep shim: unsupported option $1" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
ps -o pid,ppid,pgid,comm,args | awk -v self=$$ -v full=$full -v group="$group" -v pat="${1:-}" '
  NR == 1 || $1 == self || $2 == self { next }
  { line = $0; sub(/^ *[0-9]+ +[0-9]+ +[0-9]+ +[^ ]+ */, "", line) }
  group != "" && $3 != group { next }
  pat != "" && !((full ? line : $4) ~ pat) { next }
  { print $1; found = 1 }
  END { exit !found }'
"""


def podman_binary() -> str | None:
    """Path of podman, or None."""
    return shutil.which("podman")


def _find(name: str) -> str | None:
    return shutil.which(name) or next(
        (path for path in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(path, os.X_OK)), None
    )


def _is_static(path: str) -> bool:
    """True when the ELF file at `path` has no program interpreter (PT_INTERP), i.e. is statically linked."""
    with open(path, "rb") as handle:
        head = handle.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
            return False
        order: Literal["little", "big"] = "little" if head[5] == 1 else "big"
        phoff = int.from_bytes(head[32:40], order)
        phentsize = int.from_bytes(head[54:56], order)
        phnum = int.from_bytes(head[56:58], order)
        handle.seek(phoff)
        table = handle.read(phentsize * phnum)
    return all(int.from_bytes(table[i : i + 4], order) != 3 for i in range(0, len(table), phentsize))


def podman_missing() -> list[str]:
    """What start_podman needs and this machine lacks (empty when it can run): podman, runc, catatonit, busybox."""
    missing = [name for name in ("podman", "runc") if _find(name) is None]
    if not os.access(CATATONIT, os.X_OK):
        missing.append(f"catatonit ({CATATONIT}, for --init)")
    busybox = _find("busybox")
    if busybox is None:
        missing.append("busybox")
    elif not _is_static(busybox):
        missing.append(f"a static busybox ({busybox} is dynamically linked: install busybox-static)")
    return missing


def _ulimits() -> list[str]:
    """nofile and nproc no higher than the hard limits: root here lacks CAP_SYS_RESOURCE to raise them."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else nofile
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    return [f"nofile={nofile}:{nofile}", f"nproc={nproc}:{nproc}"]


_CONTAINERS_CONF = """\
[containers]
default_ulimits = [{ulimits}]
init = true
netns = "none"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{root}/events.log"
exit_command_delay = 2
tmp_dir = "{root}/tmp"
image_copy_tmp_dir = "{root}/tmp"
volume_path = "{root}/volumes"

[network]
network_config_dir = "{root}/networks"
"""

# vfs rather than overlay: no kernel mounts are left behind if a test run is killed, works on any filesystem
# (also overlay-on-overlay), and the image is one 2 MB layer, so copying it per container costs nothing.
_STORAGE_CONF = """\
[storage]
driver = "vfs"
graphroot = "{root}/graph"
runroot = "{root}/run"
"""


@dataclass
class Podman:
    """Podman with private config and storage under `workdir`; `env` must be in every podman's environment."""

    env: dict[str, str]
    image: str
    workdir: str

    def environ(self) -> dict[str, str]:
        """os.environ with `env` merged in: what to give a program that runs podman."""
        return {**os.environ, **self.env}

    def podman(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run `podman ARGS` with the private environment, capturing text output."""
        done = subprocess.run(
            ["podman", *args],
            env=self.environ(),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def run(self, name: str, *labels: str) -> str:
        """Start container `name` (detached, `sleep 100000` under --init, no network); labels are KEY=VALUE."""
        args = ["run", "-d", "--name", name, "--init", "--network", "none", "--runtime", "runc"]
        for limit in _ulimits():
            args += ["--ulimit", limit]
        for label in labels:
            args += ["--label", label]
        self.podman(*args, self.image, "sleep", "100000")
        return name

    def exec(
        self, name: str, *argv: str, input: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """`podman exec [-i] NAME ARGV...` (with -i when `input` is given); never raises on exit status."""
        interactive = ["-i"] if input is not None else []
        return self.podman("exec", *interactive, name, *argv, input=input, check=False, timeout=timeout)

    def remove(self, name: str) -> None:
        """Remove container `name` at once (SIGKILL, no grace period); no error when it does not exist."""
        self.podman("rm", "--force", "--ignore", "--time", "0", name)

    def reset(self) -> None:
        """Remove every container, then `podman system reset -f`: all storage is gone, the image too."""
        self.podman("rm", "--all", "--force", "--time", "0", check=False)
        self.podman("system", "reset", "--force", check=False, timeout=120)


def _rootfs_tar(busybox: str) -> bytes:
    """A tar of a minimal root filesystem: static busybox in /bin with every applet linked to it."""
    applets = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout.split()
    lacking = sorted(NEEDED_APPLETS - set(applets))
    if lacking:
        raise RuntimeError(f"{busybox} lacks applets {lacking}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", target: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname, info.size = kind, mode, target, len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data) if data else None)

        for folder in ("bin", "dev", "etc", "proc", "root", "sys", "run", "var"):
            add(folder, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        with open(busybox, "rb") as handle:
            add("bin/busybox", tarfile.REGTYPE, 0o755, handle.read())
        for applet in applets:
            if applet not in ("busybox", "pgrep") and "/" not in applet:
                add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, target="busybox")
        if "pgrep" not in applets:
            add("bin/pgrep", tarfile.REGTYPE, 0o755, _PGREP_SHIM.encode())
        add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\n")
    return buffer.getvalue()


def start_podman(workdir: str, image: str = IMAGE) -> Podman:
    """Private Podman config and storage in `workdir`, and `image` built there from a static busybox."""
    missing = podman_missing()
    if missing:
        raise RuntimeError(f"cannot run containers, missing: {', '.join(missing)}")
    workdir = os.path.abspath(workdir)
    for sub in ("tmp", "networks"):
        os.makedirs(os.path.join(workdir, sub), exist_ok=True)
    ulimits = ", ".join(f'"{limit}"' for limit in _ulimits())
    containers_conf = os.path.join(workdir, "containers.conf")
    storage_conf = os.path.join(workdir, "storage.conf")
    with open(containers_conf, "w") as handle:
        handle.write(_CONTAINERS_CONF.format(root=workdir, ulimits=ulimits))
    with open(storage_conf, "w") as handle:
        handle.write(_STORAGE_CONF.format(root=workdir))
    podman = Podman(
        env={"CONTAINERS_CONF": containers_conf, "CONTAINERS_STORAGE_CONF": storage_conf},
        image=image,
        workdir=workdir,
    )
    busybox = _find("busybox")
    assert busybox is not None
    tar_path = os.path.join(workdir, "rootfs.tar")
    with open(tar_path, "wb") as handle:
        handle.write(_rootfs_tar(busybox))
    podman.podman("import", "--quiet", "--change", "CMD=/bin/sh", tar_path, image, timeout=120)
    return podman
