"""The course's exercises are trustworthy: generated, current, graded right, and they give nothing away.

The masters in ``course/`` are turned into student notebooks and autograders by ``tools/course.py``
(otter-grader). These tests do it from scratch once, then:

* the masters' own tests pass on their model answers (``otter assign`` runs them) and the generated
  student notebooks equal the committed ``notebooks/`` (so they cannot go stale);
* grading a folder with a fully correct and a blank submission of every notebook gives 100% and 0%;
* every auto-graded question scores 0 for each of its plausible wrong answers
  (``tests/wrong_answers/nbNN.py``) while the model answer scores full marks;
* what ``grader.check`` tells a student is true: each of those wrong answers also fails the question's
  public tests, except one that hard-codes the visible case's result (the hidden tests catch that one);
* no line of a model answer appears anywhere in a student notebook.
"""
import importlib.util
import json
import pathlib
import re
import subprocess

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _module(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


course = _module(ROOT / "tools" / "course.py", "course_tool")
CHECK = re.compile(r'^grader\.check\("(?P<q>[^"]+)"\)\s*$')
HARD_CODED = "# Hard-codes the visible case: only the hidden tests catch it."
"""The first line of a wrong answer that only the hidden tests can reject (it returns the visible case's result)."""


def _wrong_answers(name: str) -> dict:
    path = ROOT / "tests" / "wrong_answers" / f"nb{name[:2]}.py"
    return _module(path, f"wrong_{name[:2]}").WRONG if path.exists() else {}


def answer_cells(nb) -> dict[str, int]:
    """Question name -> index of its answer cell (the code cell just before its ``grader.check``)."""
    found = {}
    for index, cell in enumerate(nb.cells):
        match = CHECK.match(cell.source.strip()) if cell.cell_type == "code" else None
        if match:
            answer = max(i for i in range(index) if nb.cells[i].cell_type == "code")
            found[match["q"]] = answer
    return found


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Student notebooks and autograders made from the masters, with the masters' tests run."""
    out = tmp_path_factory.mktemp("course")
    names = course.assign(out / "notebooks", out / "autograder", run_tests=True)
    return out, names


def test_masters_exist_and_every_notebook_has_graded_exercises(generated):
    out, names = generated
    assert list(names) == sorted(p.stem for p in (ROOT / "course").glob("[0-9][0-9]_*.ipynb")) and len(names) >= 9
    for name in names:
        student = nbformat.read(out / "notebooks" / f"{name}.ipynb", as_version=4)
        assert answer_cells(student), f"{name} has no auto-graded exercise"
        assert (out / "autograder" / f"{name}.zip").exists()


def test_committed_student_notebooks_are_the_generated_ones(generated):
    out, names = generated
    for name in names:
        fresh = out / "notebooks" / f"{name}.ipynb"
        committed = ROOT / "notebooks" / f"{name}.ipynb"
        assert committed.exists(), f"notebooks/{name}.ipynb is missing: run `python tools/course.py assign`"
        assert course._canonical(committed) == course._canonical(fresh), (
            f"notebooks/{name}.ipynb is stale: run `python tools/course.py assign`")


def _submission(student, answers: dict[str, str]):
    nb = nbformat.from_dict(student)
    cells = answer_cells(nb)
    for question, source in answers.items():
        nb.cells[cells[question]].source = source
    return nb


def _model_answers(name: str, out: pathlib.Path) -> dict[str, str]:
    """The model answer of every auto-graded question: its answer cell in the solutions notebook."""
    solved = nbformat.read(out / "autograder" / f"{name}.ipynb", as_version=4)
    return {q: solved.cells[i].source for q, i in answer_cells(solved).items()}


@pytest.fixture(scope="module")
def graded(generated, tmp_path_factory):
    """Grades, per notebook: the model answers, the blank student notebook, and each set of wrong answers."""
    out, names = generated
    folder = tmp_path_factory.mktemp("submissions")
    expected = {}
    for name in names:
        student = nbformat.read(out / "notebooks" / f"{name}.ipynb", as_version=4)
        wrong = _wrong_answers(name)
        for question in answer_cells(student):
            assert len(wrong.get(question, [])) >= 2, (
                f"{name} {question}: write two plausible wrong answers in tests/wrong_answers/nb{name[:2]}.py")
        variants = {"correct": _model_answers(name, out), "blank": {}}
        for k in range(max((len(v) for v in wrong.values()), default=0)):
            variants[f"wrong{k}"] = {q: sources[k] for q, sources in wrong.items() if k < len(sources)}
        for variant, answers in variants.items():
            (folder / variant).mkdir(exist_ok=True)
            nbformat.write(_submission(student, answers), folder / variant / f"{name}.ipynb")
            expected[(variant, name)] = answers
    # Notebook 8's real Flower federation is tested in tests/test_flower.py; here it would start one per submission.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FEDTEACH_FLOWER", "0")
        rows = course.grade(folder, out / "autograder", jobs=2)
    return {(r["submission"].split("/")[0], r["assignment"]): r for r in rows}, expected


def test_correct_submissions_get_full_marks_and_blank_ones_nothing(graded):
    rows, _ = graded
    for (variant, name), row in rows.items():
        if variant == "correct":
            assert row["percent"] == 100.0, f"{name}: the model answers scored {row}"
        if variant == "blank":
            assert row["score"] == 0, f"{name}: a blank submission scored {row}"


def test_every_wrong_answer_is_rejected(graded):
    rows, expected = graded
    for (variant, name), questions in expected.items():
        if not variant.startswith("wrong"):
            continue
        row = rows[(variant, name)]
        for question in questions:
            assert row[question] == 0, f"{name} {question}: wrong answer {variant} scored {row[question]}"


def test_every_wrong_answer_fails_the_public_check_too(graded):
    rows, expected = graded
    for (variant, name), answers in expected.items():
        if not variant.startswith("wrong"):
            continue
        public = rows[(variant, name)]["public"]
        for question, source in answers.items():
            if source.startswith(HARD_CODED):
                continue
            assert public.get(question) is False, (
                f"{name} {question}: wrong answer {variant} passes the public check (grader.check says it is right):\n"
                f"{source}")


def test_no_model_answer_line_appears_in_a_student_notebook(generated):
    out, names = generated
    for name in names:
        student = nbformat.read(out / "notebooks" / f"{name}.ipynb", as_version=4)
        text = "\n".join(cell.source for cell in student.cells)
        placeholders = {cells: student.cells[i].source for cells, i in answer_cells(student).items()}
        for question, answer in _model_answers(name, out).items():
            for line in answer.splitlines():
                line = line.strip()
                if len(line) < 12 or line.startswith("#") or line in placeholders[question]:
                    continue
                assert line not in text, f"{name} {question}: the model answer's line {line!r} is in the student notebook"


def _fake_otter(monkeypatch, outcomes):
    """``otter run`` replaced by a fake that plays ``outcomes`` in turn: a list of results, or an error text."""
    calls = []

    def run(command, **kwargs):
        outcome = outcomes[len(calls)]
        calls.append(command)
        if isinstance(outcome, list):
            out = pathlib.Path(command[command.index("-o") + 1])
            (out / "results.json").write_text(json.dumps({"tests": outcome}))
            return subprocess.CompletedProcess(command, 0, "", "")
        return subprocess.CompletedProcess(command, 1, "", outcome)

    monkeypatch.setattr(course.subprocess, "run", run)
    return calls


def test_a_kernel_that_dies_at_start_up_is_started_again(monkeypatch, tmp_path):
    results = [{"name": "q1", "score": 1, "max_score": 1}]
    calls = _fake_otter(monkeypatch, [course.KERNEL_START_FAILED, course.KERNEL_START_FAILED, results])
    assert course._otter_run(tmp_path / "a.ipynb", tmp_path / "a.zip") == (results, {})  # no pickled results: no public verdicts
    assert len(calls) == 3


def test_grading_stops_with_otters_output_when_the_kernel_never_starts_or_otter_fails(monkeypatch, tmp_path):
    calls = _fake_otter(monkeypatch, [course.KERNEL_START_FAILED] * 3)
    with pytest.raises(SystemExit, match="attempt 3 of 3"):
        course._otter_run(tmp_path / "a.ipynb", tmp_path / "a.zip")
    assert len(calls) == 3
    calls = _fake_otter(monkeypatch, ["NameError: name 'x' is not defined"])
    with pytest.raises(SystemExit, match="(?s)attempt 1 of 3.*NameError"):
        course._otter_run(tmp_path / "a.ipynb", tmp_path / "a.zip")
    assert len(calls) == 1


def test_no_hidden_test_shadows_a_public_one():
    # Otter keeps one test case per function name: a hidden test named like the public one would replace
    # it, and grader.check would then pass every answer (03 q2 and 05 q2 once did).
    for master in course.masters():
        assert course.shadowed_tests(master) == [], master.name


def test_a_hidden_test_named_like_the_public_one_is_found(tmp_path):
    nb = nbformat.v4.new_notebook()
    test = "def test_x(a):\n    assert a == 1\n\ntest_x(a)"
    nb.cells = [nbformat.v4.new_raw_cell("# BEGIN QUESTION\nname: q1\npoints: 1"),
                nbformat.v4.new_code_cell(test),
                nbformat.v4.new_code_cell('""" # BEGIN TEST CONFIG\nhidden: true\n""" # END TEST CONFIG\n' + test)]
    master = tmp_path / "99_example.ipynb"
    nbformat.write(nb, master)
    assert course.shadowed_tests(master) == ["q1 test_x"]
