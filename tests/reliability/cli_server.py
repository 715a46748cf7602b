"""A fork server for ``python -m pipeline``: imports the pipeline's stack once, then forks one child per
command, so that a test can SIGKILL 50 real CLI runs without paying ~15 s of imports for each.

Each child is a real process running ``pipeline.cli.main(argv)`` with its stdout and stderr in a log
file, exactly as ``python -m pipeline`` would after its imports. Nothing has trained or plotted in
this server before it forks (no OpenMP or BLAS work has run), so the children start clean.

Protocol, one JSON object per line: ``{"run": [...argv], "log": path}`` -> ``{"pid": n, "t": unix time}``;
``{"wait": pid}`` -> ``{"status": exit code, or -signal}``; end of input stops the server.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _child(argv: list[str], log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    code = 1
    try:
        from pipeline.cli import main

        code = main(argv)
    except BaseException:  # noqa: BLE001 - shown in the log, as the interpreter would
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    # The imports a pipeline run needs, done once: the CLI, every step, the plots.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import xgboost  # noqa: F401

    import pipeline.cli  # noqa: F401
    import pipeline.run  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "run" in request:
            started = time.time()
            pid = os.fork()
            if pid == 0:
                _child(request["run"], request["log"])
            print(json.dumps({"pid": pid, "t": started}), flush=True)
        else:
            _, status = os.waitpid(int(request["wait"]), 0)
            print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
