r"""Runs many command lines in one process, as a user types them, and records each result.

  python tests/cli_driver.py CASES.json RESULTS.json

CASES.json is a list of {"name", "argv", "cwd"}: argv[0] is "mmjax.main" (run as
`python -m mmjax.main` runs it: `mmjax.main.run`, absl's `app.run` included) or the path
of a tool script (run as `python tools/x.py` runs it: its `__main__` block). For each,
RESULTS.json gets {"name", "status", "output"}: the exit status (None if the command
returned without exiting: a tool that finished), and everything written to file
descriptors 1 and 2 meanwhile, logs included. One JAX start serves them all, which is what
makes a test per bad input affordable (each `python -m mmjax.main` start costs seconds).
"""

import json
import os
import runpy
import sys
import tempfile
import traceback


def _invoke(argv: list[str]) -> int | None:
    """The command's exit status, or None if it returned; an escaping exception is
    printed (it would have been a traceback) and counts as status "escaped"."""
    sys.argv = list(argv)
    try:
        if argv[0] == "mmjax.main":
            from mmjax import main

            main.run(argv)
        else:
            _run_script(argv[0])
    except SystemExit as e:
        code = e.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)  # SystemExit("message"), as the interpreter prints it
        return 1
    except BaseException:
        traceback.print_exc()
        return -1
    return None


def _run_script(path: str) -> None:
    """The script's `__main__` block; absl flags it defines are removed afterwards, so that
    the next case that runs it can define them again."""
    from absl import app, flags  # noqa: F401  (app defines flags of its own: keep them)

    before = set(flags.FLAGS)
    try:
        runpy.run_path(path, run_name="__main__")
    finally:
        for name in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, name)


def run_case(case: dict) -> dict:
    """One case with its output captured at the file-descriptor level."""
    with tempfile.TemporaryFile() as out:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        here = os.getcwd()
        try:
            os.chdir(case.get("cwd") or here)
            status = _invoke(case["argv"])
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.chdir(here)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return {"name": case["name"], "status": status, "output": text}


def main() -> None:
    cases_path, results_path = sys.argv[1:3]
    with open(cases_path) as f:
        cases = json.load(f)
    results = [run_case(c) for c in cases]
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
