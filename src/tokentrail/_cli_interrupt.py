"""Quiet Ctrl-C for the `tokentrail` command from its first import (see the function)."""


def quiet_ctrl_c_in_the_cli() -> None:
    """Run as the `tokentrail` command, Ctrl-C while this package still imports (the first few
    hundred milliseconds) stops with status 130 and no KeyboardInterrupt traceback; the CLI's
    own handler (tokentrail.cli.main) takes over from there. Imported as a library: no effect.
    Only built-in modules here (`_signal`), so nothing imports before the handler is set."""
    import _signal
    import sys

    if (sys.argv[0] if sys.argv else "").replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".exe") != "tokentrail":
        return
    if _signal.getsignal(_signal.SIGINT) is not _signal.default_int_handler:
        return  # someone else chose what Ctrl-C does

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(130)

    try:
        _signal.signal(_signal.SIGINT, stop)
    except ValueError:  # not the main thread: signals are not ours to handle
        pass


quiet_ctrl_c_in_the_cli()
