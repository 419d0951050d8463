"""The ``rxfs`` command: mount, umount, backends; and ``mount.rxfs`` for mount(8).

Bad input (unknown scheme, missing or busy mount point, unknown option) is one line on
stderr and exit status 2; a mount that fails at run time (authentication, unreachable
host) exits 1. Never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from rxfs.minirdr import MiniRdrDispatch, UnknownSchemeError, available_backends, load_backend
from rxfs.rdbss import (
    CORE_OPTIONS,
    CoreOptions,
    option_what,
    parse_flag,
    parse_option_groups,
    parse_seconds,
)

from ._mount import MountRequest, run
from ._mounthelper import (
    KERNEL_FLAGS,
    ignored_by_rxfs,
    install_mount_helper,
    parse_helper_argv,
    remove_mount_helper,
    sd_notify,
)
from ._mounttable import mount_entry
from ._operations import FsOptions
from ._status import parse_metrics_address
from ._statuscli import add_status_commands, socket_for
from ._umount import ProcessState, Umount, UmountRefusedError, process_state
from ._usage import options_help, versions

__all__ = ["main", "mount_helper_main"]

log = logging.getLogger("rxfs")

EXIT_USAGE = 2
EXIT_FAILURE = 1


class UsageError(Exception):
    """Bad input: reported as one line and exit status 2."""


class PluginError(Exception):
    """An installed backend is broken: one line and exit status 1."""


# -- state: where a background mount keeps its pid and log -----------------------------


def state_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/rxfs-{os.getuid()}"
    path = Path(base) / "rxfs" if "XDG_RUNTIME_DIR" in os.environ else Path(base)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _state_file(mountpoint: str, suffix: str) -> Path:
    name = mountpoint.strip("/").replace("/", "_") or "root"
    return state_dir() / f"{name}.{suffix}"


# -- options ------------------------------------------------------------------------------


def split_options(
    options: dict[str, str], minirdr: type[MiniRdrDispatch]
) -> tuple[FsOptions, CoreOptions, dict[str, str], set[str]]:
    """Sort ``-o`` options to the front end, the core, the backend and the kernel's mount
    flags; refuse unknown names and bad values."""
    fs_options = FsOptions()
    core: dict[str, str] = {}
    backend: dict[str, str] = {}
    kernel_flags = {name for name in options if name in KERNEL_FLAGS}
    try:
        for name, value in options.items():
            # A name mount(8) takes without a value (user) may be a backend's option with
            # one (mount.cifs's user=NAME).
            taken_by_backend = bool(value) and name in minirdr.option_names
            if name in KERNEL_FLAGS or (ignored_by_rxfs(name) and not taken_by_backend):
                continue
            if name in CORE_OPTIONS:
                core[name] = value
            elif name == "entry_timeout":
                fs_options.entry_timeout = parse_seconds(value, option_what(name, value))
            elif name == "allow_other":
                fs_options.allow_other = True
            elif name == "default_permissions":
                fs_options.default_permissions = True
            elif name == "metrics":
                fs_options.metrics = parse_metrics_address(value)
            elif name in ("uid", "gid", "umask"):
                fs_options.set_shown(name, value)
            elif name == "writeback_cache":
                fs_options.writeback_cache = parse_flag(value, option_what(name, value))
            elif name in minirdr.option_names:
                backend[name] = value
            else:
                known = sorted({*FsOptions.NAMES, *CORE_OPTIONS, *minirdr.option_names})
                raise UsageError(
                    f"unknown option -o {name} for {minirdr.scheme}:// (known: {', '.join(known)})"
                )
        core_options = CoreOptions.parse(core)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # One attribute timeout for the core's cache and the kernel's.
    fs_options.attr_timeout = core_options.attr_timeout
    if "entry_timeout" not in options:
        # One knob for what the kernel may answer from its caches: a name and its
        # attributes are cached alike unless told apart.
        fs_options.entry_timeout = core_options.attr_timeout
    if core_options.read_only:
        kernel_flags = (kernel_flags - {"rw"}) | {"ro"}
    return fs_options, core_options, backend, kernel_flags


# -- commands -----------------------------------------------------------------------------


def _check_mountpoint(path: str) -> str:
    mountpoint = os.path.realpath(path)
    try:
        is_dir = stat.S_ISDIR(os.stat(mountpoint).st_mode)
    except FileNotFoundError:
        raise UsageError(f"mount point {path} does not exist (mkdir it first)") from None
    except OSError as exc:
        raise UsageError(
            f"mount point {path} is unusable ({exc.strerror}); if a mount died there, "
            f"run 'rxfs umount {path}'"
        ) from None
    if not is_dir:
        raise UsageError(f"mount point {path} is not a directory")
    entry = mount_entry(mountpoint)
    # systemd's automount point (x-systemd.automount) is an autofs mount that the mount
    # it triggers goes on top of.
    if entry is not None and entry.fstype != "autofs":
        raise UsageError(f"{path} is already a mount point ('rxfs umount {path}' first)")
    return mountpoint


def _build_request(args: argparse.Namespace) -> tuple[MountRequest, type[MiniRdrDispatch]]:
    try:
        url = urlsplit(args.url)
    except ValueError as exc:
        raise UsageError(f"{args.url!r} is not a valid URL: {exc}") from None
    if not url.scheme:
        raise UsageError(f"{args.url!r} is not a URL: use e.g. sftp://user@host/path or memory://")
    try:
        minirdr = load_backend(url.scheme)
    except UnknownSchemeError as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:  # a broken plugin: say which, without its traceback
        raise PluginError(f"cannot load the mini-redirector for {url.scheme}://: {exc}") from None
    mountpoint = _check_mountpoint(args.mountpoint)
    options = parse_option_groups(args.options)
    fs_options, core_options, backend_options, kernel_flags = split_options(options, minirdr)
    report = _state_file(mountpoint, "unflushed")
    report.unlink(missing_ok=True)
    request = MountRequest(
        args.url,
        mountpoint,
        fs_options,
        core_options,
        backend_options,
        report,
        kernel_flags=kernel_flags,
    )
    request.status_path = socket_for(_state_file, mountpoint)
    return request, minirdr


def _setup_logging(debug: bool, logfile: Path | None = None) -> None:
    handler: logging.Handler = (
        logging.FileHandler(logfile) if logfile is not None else logging.StreamHandler()
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # paramiko's transport chatter is not ours to show unless debugging: it logs every
    # failed handshake as a traceback at ERROR; our own log says what the loss means.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if debug else logging.CRITICAL)


def cmd_mount(args: argparse.Namespace) -> int:
    request, minirdr_cls = _build_request(args)
    if args.fake:
        return 0  # mount -f: the arguments were checked; mount nothing
    minirdr = minirdr_cls()
    if args.foreground:
        _setup_logging(args.debug)
        return _serve_foreground(request, minirdr)
    return _serve_background(request, minirdr, args.debug)


def _serve_foreground(request: MountRequest, minirdr: MiniRdrDispatch) -> int:
    def ready(error: str | None) -> None:
        if error is not None:
            print(f"rxfs: {error}", file=sys.stderr)
        else:
            sd_notify(f"READY=1\nSTATUS=mounted {request.url} on {request.mountpoint}")

    with _pid_file(request.mountpoint):
        return run(request, minirdr, ready)


@contextlib.contextmanager
def _pid_file(mountpoint: str) -> Iterator[None]:
    """The serving process's pid, for ``rxfs umount``, while it serves."""
    pid_file = _state_file(mountpoint, "pid")
    pid_file.write_text(str(os.getpid()))
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()


def _serve_background(request: MountRequest, minirdr: MiniRdrDispatch, debug: bool) -> int:
    """Fork; the parent returns once the child reports the mount ready or failed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
        if message == "ok":
            # Type=notify with a forking mount: the child is the service's main process.
            sd_notify(
                f"READY=1\nMAINPID={pid}\nSTATUS=mounted {request.url} on {request.mountpoint}"
            )
            return 0
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        print(
            f"rxfs: {message or 'the mount process died before the mount was ready'}",
            file=sys.stderr,
        )
        return code if code > 0 else EXIT_FAILURE
    os.close(read_end)
    os.setsid()
    os.environ.pop("NOTIFY_SOCKET", None)  # the parent speaks to systemd
    logfile = _state_file(request.mountpoint, "log")
    _setup_logging(debug, logfile)

    def ready(error: str | None) -> None:
        if error is not None:
            log.error("mount failed: %s", error)  # the log says why, not only stderr
        os.write(write_end, b"ok" if error is None else error.encode())
        os.close(write_end)
        _detach_stdio()
        os.chdir("/")  # as a daemon does: keep no file system busy

    code = EXIT_FAILURE
    with _pid_file(request.mountpoint):
        try:
            code = run(request, minirdr, ready)
        except BaseException:
            log.exception("mount process failed")
    logging.shutdown()
    os._exit(code)


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def resolve_without_entering(path: str) -> str:
    """``path`` made absolute with its parent's links resolved, but without a lookup of
    ``path`` itself: realpath() would stat the mount point, which waits forever on a
    mount whose process no longer answers."""
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(parent), name)


def cmd_umount(args: argparse.Namespace) -> int:
    """Unmount within --timeout whatever state the mount is in (see _umount)."""
    if args.timeout <= 0:
        raise UsageError("--timeout takes a number of seconds above 0")
    mountpoint = resolve_without_entering(args.mountpoint)
    umount = Umount(
        mountpoint,
        args.mountpoint,
        args.timeout,
        lazy=args.lazy,
        force=args.force,
        pid_file=_state_file(mountpoint, "pid"),
        report_file=_state_file(mountpoint, "unflushed"),
        log_file=_state_file(mountpoint, "log"),
        say=lambda line: print(f"rxfs: {line}", file=sys.stderr),
        status_socket=socket_for(_state_file, mountpoint),
    )
    entry = mount_entry(mountpoint)
    if entry is None:
        pid = umount.pid()
        if process_state(pid) is not ProcessState.GONE:
            assert pid is not None
            return umount.finish(pid)  # unmounted, still sending what it holds
        umount.forget_pid()
        if pid is None:
            raise UsageError(f"{args.mountpoint} is not mounted")
        return EXIT_FAILURE if umount.print_unflushed() else 0
    if not entry.is_rxfs:
        raise UsageError(
            f"{args.mountpoint} is a {entry.fstype} mount, not an rxfs one: "
            "unmount it with umount or fusermount3 -u"
        )
    try:
        return umount.run(entry)
    except UmountRefusedError as exc:
        print(f"rxfs: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def cmd_backends(args: argparse.Namespace) -> int:
    rows = [("SCHEME", "DISTRIBUTION", "VERSION", "CAPABILITIES", "DESCRIPTION")]
    for scheme, info in available_backends().items():
        try:
            cls = info.load()
        except Exception as exc:  # a broken plugin must not hide the others
            rows.append((scheme, info.distribution, info.version, "-", f"cannot load: {exc}"))
            continue
        caps = ",".join(
            c.name.lower() for c in type(cls.capabilities) if c in cls.capabilities and c.name
        )
        rows.append(
            (f"{scheme}://", info.distribution, info.version, caps or "-", cls.description)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[4]
        )
    print(f"\n{options_help()}")
    return 0


def cmd_install_mount_helper(args: argparse.Namespace) -> int:
    """Link /sbin/mount.rxfs and /sbin/mount.fuse.rxfs (mount -t rxfs, fstab) to this
    installation's mount.rxfs, or remove those links."""
    directory = Path(args.dir)
    try:
        done = (remove_mount_helper if args.remove else install_mount_helper)(directory)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        print(f"rxfs: {directory}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    for line in done:
        print(line)
    return 0


def cmd_conformance(args: argparse.Namespace) -> int:
    """Mount URL and run the conformance kit (rxfs.testing) against it through pytest."""
    # Imported here: pytest and the kit load only for this command.
    from rxfs.testing import run_conformance  # noqa: PLC0415

    return run_conformance(args.url, args.options, ["-k", args.k] if args.k else [])


def _add_options_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "-o", dest="options", action="append", default=[], metavar="opt[=val],...", help=help_text
    )


class _Parser(argparse.ArgumentParser):
    """A parser whose help may end in text made only when asked for (the option list
    loads every backend)."""

    more_help: Callable[[], str] | None = None

    def format_help(self) -> str:
        text = super().format_help()
        return text if self.more_help is None else f"{text}\n{self.more_help()}\n"


class _VersionAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        for name, version in versions():
            print(f"{name} {version}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rxfs",
        description="Mount a remote share (sftp://, memory://, plugins) through FUSE. "
        "'rxfs URL MOUNTPOINT -o ...' is 'rxfs mount' as mount(8) calls it.",
    )
    parser.add_argument(
        "--version", action=_VersionAction, nargs=0, help="versions of rxfs and what it runs on"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    mount = sub.add_parser(
        "mount",
        help="mount URL on MOUNTPOINT",
        description="Mount URL on MOUNTPOINT. Without -f, returns once the "
        "mount is ready and serves it from the background (log in "
        f"{state_dir()}/MOUNTPOINT.log, the path's slashes as _).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mount.more_help = options_help
    mount.add_argument("url", metavar="URL", help="sftp://[user@]host[:port]/path, memory://")
    mount.add_argument("mountpoint", metavar="MOUNTPOINT")
    mount.add_argument(
        "-f", "--foreground", action="store_true", help="stay in the foreground, logging to stderr"
    )
    _add_options_argument(mount, "mount options (listed below)")
    mount.add_argument("--debug", action="store_true", help="log every request")
    mount.set_defaults(func=cmd_mount, fake=False)
    umount = sub.add_parser(
        "umount",
        help="flush and unmount MOUNTPOINT",
        description="Flush, then unmount; also cleans up after a mount whose process died.",
    )
    umount.add_argument("mountpoint", metavar="MOUNTPOINT")
    umount.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait in all (default 30); past them the mount is detached and "
        "the process left to finish sending what it holds",
    )
    how = umount.add_mutually_exclusive_group()
    how.add_argument(
        "--lazy",
        action="store_true",
        help="unmount even while in use: detach now, finish when the last user lets go",
    )
    how.add_argument(
        "--force",
        action="store_true",
        help="unmount even while in use: abort the FUSE connection, so processes using "
        "the mount get ENOTCONN at once (held bytes are still sent)",
    )
    umount.set_defaults(func=cmd_umount)
    add_status_commands(sub, _state_file)
    backends = sub.add_parser("backends", help="list the installed mini-redirectors")
    backends.set_defaults(func=cmd_backends)
    conformance = sub.add_parser(
        "conformance",
        help="run the backend conformance kit against URL",
        description="Mount URL through FUSE, run the behavioural suite against the mount "
        "and print pytest's summary; exits non-zero when a test fails.",
    )
    conformance.add_argument("url", metavar="URL")
    _add_options_argument(conformance, "mount options, as for 'rxfs mount'")
    conformance.add_argument("-k", metavar="EXPR", help="only tests matching EXPR (pytest -k)")
    conformance.set_defaults(func=cmd_conformance)
    helper = sub.add_parser(
        "install-mount-helper",
        help="make mount -t rxfs and fstab work: link mount.rxfs into /sbin",
        description="Link DIR/mount.rxfs and DIR/mount.fuse.rxfs (what mount(8) runs for "
        "-t rxfs and -t fuse.rxfs) to this installation's mount.rxfs.",
    )
    helper.add_argument("--dir", default="/sbin", help="where mount(8) looks (default /sbin)")
    helper.add_argument("--remove", action="store_true", help="remove those links instead")
    helper.set_defaults(func=cmd_install_mount_helper)
    return parser


def _as_mount_helper(argv: Sequence[str]) -> argparse.Namespace:
    """``URL MOUNTPOINT -o ...`` (mount.rxfs, or rxfs run by mount.fuse3) as the
    arguments of a background ``rxfs mount``."""
    try:
        helper = parse_helper_argv(argv)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return argparse.Namespace(
        func=cmd_mount,
        url=helper.url,
        mountpoint=helper.mountpoint,
        options=helper.options,
        foreground=False,
        debug=False,
        fake=helper.fake,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # mount.fuse3 runs the type's program as "rxfs URL MOUNTPOINT -o OPTIONS".
    return _run(argv, as_helper=bool(argv) and "://" in argv[0] and argv[0][:1] != "-")


def mount_helper_main() -> int:
    """``mount.rxfs URL MOUNTPOINT [-sfnv] -o OPTIONS``: what mount(8) runs for -t rxfs."""
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        usage = "usage: mount.rxfs URL MOUNTPOINT [-o opt[=val],...]  (options: rxfs mount --help)"
        print(usage, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_USAGE
    return _run(argv, as_helper=True)


def _run(argv: Sequence[str], *, as_helper: bool) -> int:
    try:
        args = _as_mount_helper(argv) if as_helper else build_parser().parse_args(argv)
        code: int = args.func(args)
    except UsageError as exc:
        print(f"rxfs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PluginError as exc:
        print(f"rxfs: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
