"""The course's exercises, with otter-grader: generate the student notebooks, check they are current, grade.

The master notebooks in ``course/`` hold the whole course: teaching cells, every exercise as an
otter-grader question with its model answer, public tests (a hint for the student) and hidden tests
(the grade). ``otter assign`` turns each master into a student notebook (answers and hidden tests
removed) and an autograder zip. This script runs it for every master and writes:

* ``notebooks/<name>.ipynb``: the student notebook, with a header cell of Binder / Colab badges and a
  set-up cell for Colab, cell ids that do not change between runs, and no outputs;
* ``build/autograder/<name>.zip``: the autograder (public + hidden tests) for ``otter run``, and
  ``build/autograder/<name>.ipynb``: the notebook with the model answers.

Usage (from the repository root, in the project's environment)::

    python tools/course.py assign [01 03]    # regenerate notebooks/ and build/autograder/ (all, or some)
    python tools/course.py check             # fail if notebooks/ is not what assign would write
    python tools/course.py grade SUBMISSIONS # grade every .ipynb under SUBMISSIONS (no Docker)

``assign`` runs each master with its model answers and fails if any test fails on them
(``--no-run-tests`` skips that). ``grade`` runs ``otter run`` on each submission, on this machine,
with the autograder of the notebook it was generated from, and writes ``grades.csv`` next to the
submissions. (``otter grade`` needs Docker; ``otter run`` does the same grading without it.)
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import csv
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import nbformat

ROOT = pathlib.Path(__file__).resolve().parent.parent
MASTERS = ROOT / "course"
STUDENT = ROOT / "notebooks"
AUTOGRADERS = ROOT / "build" / "autograder"
REPOSITORY = "fedteach/fedteach"
OTTER = [sys.executable, "-m", "otter"]

HEADER = """[![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/{repo}/HEAD?urlpath=lab/tree/notebooks/{name}.ipynb)
[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name}.ipynb)

*Exercises:* cells that say `grader.check("...")` check your answer and give a hint when it is not right yet."""

SETUP = """# On Colab (or any kernel without fedteach): install fedteach and the exercise checker, and fetch
# this notebook's file, which holds the exercises' checks. Elsewhere this cell does nothing.
import importlib.util, subprocess, sys, urllib.request
if importlib.util.find_spec("fedteach") is None or importlib.util.find_spec("otter") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet",
                           "fedteach @ git+https://github.com/{repo}"])
if "google.colab" in sys.modules:
    urllib.request.urlretrieve("https://raw.githubusercontent.com/{repo}/main/notebooks/{name}.ipynb", "{name}.ipynb")"""


def masters(only=()) -> list[pathlib.Path]:
    """The master notebooks, in course order; ``only``: name prefixes to keep (e.g. ``["01", "03"]``)."""
    return [p for p in sorted(MASTERS.glob("[0-9][0-9]_*.ipynb"))
            if not only or any(p.name.startswith(prefix) for prefix in only)]


def _stable_ids(nb, name: str) -> None:
    for index, cell in enumerate(nb.cells):
        digest = hashlib.sha1(f"{name}:{index}:{cell.cell_type}".encode()).hexdigest()[:8]
        cell["id"] = f"{name[:2]}-{index:03d}-{digest}"


def _student_notebook(path: pathlib.Path, name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    header = [nbformat.v4.new_markdown_cell(HEADER.format(repo=REPOSITORY, name=name)),
              nbformat.v4.new_code_cell(SETUP.format(repo=REPOSITORY, name=name))]
    # The title stays first, then the badges, the set-up cell and otter's init cell (which needs the set-up).
    init = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("# Initialize Otter")]
    cells = [c for c in nb.cells if not any(c is i for i in init)]
    nb.cells = cells[:1] + header + init + cells[1:]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    _stable_ids(nb, name)
    return nb


def shadowed_tests(master: pathlib.Path) -> list[str]:
    """The test functions of ``master`` whose name another test cell of the same question uses too.

    Otter keeps one test case per function name, so a hidden test named like a public one replaces it:
    ``grader.check`` then runs no public test and says every answer is right. ``assign`` refuses them.
    """
    names, question = collections.Counter(), None
    for cell in nbformat.read(master, as_version=4).cells:
        if cell.cell_type == "raw" and "BEGIN QUESTION" in cell.source:
            question = re.search(r"^name:\s*(\S+)", cell.source, re.M).group(1)
        elif cell.cell_type == "code" and question:
            names.update((question, function) for function in re.findall(r"^def (test_\w+)", cell.source, re.M))
    return [f"{question} {function}" for (question, function), count in names.items() if count > 1]


def assign(out_notebooks: pathlib.Path, out_autograders: pathlib.Path, run_tests: bool = True,
           only=()) -> list[str]:
    """Runs ``otter assign`` on every master (or those named by ``only``); returns the names written."""
    out_notebooks.mkdir(parents=True, exist_ok=True)
    out_autograders.mkdir(parents=True, exist_ok=True)
    names = []
    for master in masters(only):
        name = master.stem
        if shadowed := shadowed_tests(master):
            raise SystemExit(f"{master.name}: test functions named twice in one question (the later replaces the "
                             f"earlier in otter): {', '.join(shadowed)}")
        with tempfile.TemporaryDirectory() as tmp:
            command = OTTER + ["assign", str(master), tmp]
            if not run_tests:
                command.append("--no-run-tests")
            done = subprocess.run(command, cwd=MASTERS, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"otter assign failed for {master.name}:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
            student = _student_notebook(pathlib.Path(tmp, "student", master.name), name)
            nbformat.write(student, out_notebooks / master.name)
            zips = list(pathlib.Path(tmp, "autograder").glob("*.zip"))
            if len(zips) == 1:
                shutil.copyfile(zips[0], out_autograders / f"{name}.zip")
            # The notebook with the model answers, for instructors (and the tests).
            shutil.copyfile(pathlib.Path(tmp, "autograder", master.name), out_autograders / master.name)
        names.append(name)
    return names


def _canonical(path: pathlib.Path) -> str:
    return json.dumps(nbformat.read(path, as_version=4), sort_keys=True, indent=1)


def check() -> list[str]:
    """The student notebooks that differ from what ``assign`` writes now (empty: all current)."""
    with tempfile.TemporaryDirectory() as tmp:
        assign(pathlib.Path(tmp, "notebooks"), pathlib.Path(tmp, "autograder"), run_tests=False)
        fresh = {p.name for p in pathlib.Path(tmp, "notebooks").glob("*.ipynb")}
        current = {p.name for p in STUDENT.glob("[0-9][0-9]_*.ipynb")}
        stale = sorted(current ^ fresh)
        stale += [n for n in sorted(current & fresh)
                  if _canonical(STUDENT / n) != _canonical(pathlib.Path(tmp, "notebooks", n))]
    return stale


KERNEL_START_FAILED = "Kernel died before replying to kernel_info"


def _otter_run(path: pathlib.Path, zip_path: pathlib.Path, attempts: int = 3) -> tuple[list[dict], dict[str, bool]]:
    """The test results of ``otter run`` on one submission, and per question whether its public tests passed
    (what ``grader.check`` tells the student).

    A kernel that dies before it answers (it never ran a cell of the submission: for example two
    kernels starting at once picked the same free port) is started again, up to ``attempts`` times;
    any other failure, or the same one every time, stops the grading with otter's output.
    """
    for attempt in range(1, attempts + 1):
        with tempfile.TemporaryDirectory() as out:  # otter writes results.pkl in its working directory
            done = subprocess.run(OTTER + ["run", "--no-logo", "--pickle-results", "-a", str(zip_path.resolve()),
                                           "-o", out, str(path.resolve())], capture_output=True, text=True, cwd=out)
            results, pickled = pathlib.Path(out, "results.json"), pathlib.Path(out, "results.pkl")
            if results.exists():
                public = {}
                if pickled.exists():
                    import dill  # otter's own pickler (an otter dependency)
                    graded = dill.loads(pickled.read_bytes())
                    public = {name: test.passed_all_public for name, test in graded.results.items()}
                return json.loads(results.read_text())["tests"], public
        if KERNEL_START_FAILED not in done.stdout + done.stderr:
            break
    raise SystemExit(f"otter run failed for {path} (attempt {attempt} of {attempts}):\n"
                     f"{done.stdout[-3000:]}{done.stderr[-3000:]}")


def _grade_one(path: pathlib.Path, submissions: pathlib.Path, autograders: pathlib.Path) -> dict:
    """One submission's row of ``grades.csv``; its key ``public`` (not written to the file) holds, per question,
    whether the public tests passed."""
    name = nbformat.read(path, as_version=4).metadata.get("otter", {}).get("assignment_name")
    zip_path = autograders / f"{name}.zip"
    if name is None or not zip_path.exists():
        raise SystemExit(f"{path}: no autograder for assignment {name!r} in {autograders} "
                         "(run `python tools/course.py assign` first)")
    tests, public = _otter_run(path, zip_path)
    graded = [t for t in tests if "max_score" in t and t.get("name") != "Public Tests"]
    score = sum(t["score"] for t in graded)
    total = sum(t["max_score"] for t in graded)
    return {"submission": path.relative_to(submissions).as_posix(), "assignment": name,
            "score": score, "max_score": total, "percent": round(100 * score / total, 1) if total else 100.0,
            **{t["name"]: t["score"] for t in graded}, "public": public}


def grade(submissions: pathlib.Path, autograders: pathlib.Path = AUTOGRADERS, jobs: int = 1) -> list[dict]:
    """Grades every ``*.ipynb`` under ``submissions`` with ``otter run``; writes ``grades.csv`` there (the rows
    returned also say, under ``public``, which questions' public tests passed).

    A submission is matched to its autograder by the notebook's otter assignment name (the master's
    file name), whatever the submission's file is called. ``jobs`` submissions are graded at once.
    """
    paths = [p for p in sorted(submissions.rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        rows = list(pool.map(lambda p: _grade_one(p, submissions, autograders), paths))
    with open(submissions / "grades.csv", "w", newline="") as f:
        fields = ["submission", "assignment", "score", "max_score", "percent"]
        fields += sorted({k for row in rows for k in row} - set(fields) - {"public"})
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("assign", help="regenerate notebooks/ and build/autograder/ from course/")
    p.add_argument("--no-run-tests", action="store_true", help="do not run the masters' tests on their answers")
    p.add_argument("only", nargs="*", help="name prefixes of the masters to assign (default: all), e.g. 01 03")
    sub.add_parser("check", help="fail if notebooks/ is stale")
    p = sub.add_parser("grade", help="grade a folder of submitted notebooks")
    p.add_argument("submissions", type=pathlib.Path)
    p.add_argument("--jobs", type=int, default=1, help="submissions graded at once")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command == "assign":
        names = assign(STUDENT, AUTOGRADERS, run_tests=not args.no_run_tests, only=args.only)
        print(f"wrote {len(names)} student notebooks to notebooks/ and autograders to build/autograder/")
    elif args.command == "check":
        stale = check()
        if stale:
            print("stale student notebooks (run `python tools/course.py assign`):", ", ".join(stale))
            return 1
        print("notebooks/ is current")
    else:
        for row in grade(args.submissions, jobs=args.jobs):
            print(f"{row['submission']}: {row['score']:g} / {row['max_score']:g} ({row['percent']:g}%)")
        print(f"wrote {args.submissions / 'grades.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
