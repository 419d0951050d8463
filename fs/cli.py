"""The ``rxfs`` command: mount, umount, backends.

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
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from rxfs.minirdr import MiniRdrDispatch, UnknownSchemeError, available_backends, load_backend
from rxfs.rdbss import (
    CORE_OPTIONS,
    CoreOptions,
    option_what,
    parse_option_groups,
    parse_seconds,
)

from ._mount import MountRequest, run
from ._mounttable import mount_entry
from ._operations import FsOptions
from ._umount import ProcessState, Umount, UmountRefusedError, process_state

__all__ = ["main"]

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
) -> tuple[FsOptions, CoreOptions, dict[str, str]]:
    """Sort ``-o`` options to the front end, the core and the backend; refuse unknown
    names and bad values."""
    fs_options = FsOptions()
    core: dict[str, str] = {}
    backend: dict[str, str] = {}
    try:
        for name, value in options.items():
            if name in CORE_OPTIONS:
                core[name] = value
            elif name == "entry_timeout":
                fs_options.entry_timeout = parse_seconds(value, option_what(name, value))
            elif name == "allow_other":
                fs_options.allow_other = True
            elif name == "default_permissions":
                fs_options.default_permissions = True
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
    return fs_options, core_options, backend


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
    if mount_entry(mountpoint) is not None:
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
    fs_options, core_options, backend_options = split_options(options, minirdr)
    report = _state_file(mountpoint, "unflushed")
    report.unlink(missing_ok=True)
    request = MountRequest(args.url, mountpoint, fs_options, core_options, backend_options, report)
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
    minirdr = minirdr_cls()
    if args.foreground:
        _setup_logging(args.debug)
        return _serve_foreground(request, minirdr)
    return _serve_background(request, minirdr, args.debug)


def _serve_foreground(request: MountRequest, minirdr: MiniRdrDispatch) -> int:
    def ready(error: str | None) -> None:
        if error is not None:
            print(f"rxfs: {error}", file=sys.stderr)

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
    logfile = _state_file(request.mountpoint, "log")
    _setup_logging(debug, logfile)

    def ready(error: str | None) -> None:
        os.write(write_end, b"ok" if error is None else error.encode())
        os.close(write_end)
        _detach_stdio()

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rxfs",
        description="Mount a remote share (sftp://, memory://, plugins) through FUSE.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    mount = sub.add_parser(
        "mount",
        help="mount URL on MOUNTPOINT",
        description="Mount URL on MOUNTPOINT. Without -f, returns once the "
        "mount is ready and serves it from the background (log in "
        f"{state_dir()}).",
    )
    mount.add_argument("url", metavar="URL", help="sftp://[user@]host[:port]/path, memory://")
    mount.add_argument("mountpoint", metavar="MOUNTPOINT")
    mount.add_argument(
        "-f", "--foreground", action="store_true", help="stay in the foreground, logging to stderr"
    )
    _add_options_argument(mount, "mount options (see 'rxfs backends')")
    mount.add_argument("--debug", action="store_true", help="log every request")
    mount.set_defaults(func=cmd_mount)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
