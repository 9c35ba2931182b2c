"""nox sessions: `nox -s tests` (the CI test command), `nox -s matrix` (the main job), `nox -s bench`
(benchmarks: the harness's own speed against the per-process baseline)."""

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

CONSTRAINTS = ("-c", "constraints.txt")


def _install(session: nox.Session) -> None:
    session.install(*CONSTRAINTS, "-e", ".[onnx,openvino,executorch,test]")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit + end-to-end tests (a smoke matrix over real exports)."""
    _install(session)
    session.run("pytest", *session.posargs)


BASELINE = "reports/baseline"


@nox.session
def matrix(session: nox.Session) -> None:
    """The main job: profile `ci`, report in reports/latest/, compared with the committed baseline
    (reports/baseline: diff.md/diff.html/diff.json and the report's "changed since baseline" box). Extra args
    go to `harness run` after `--baseline reports/baseline`: `-- --no-baseline` compares with nothing,
    `-- --baseline DIR` with another run (the last one given wins).

    Fails (exit 1) on unexpected results (fail, error, crash, timeout, xpass) or a baseline regression; the
    report, junit.xml and summary.md are written either way. `nox -s matrix -- --exit-zero` only reports."""
    _install(session)
    session.run("python", "-m", "harness", "run", "--profile", "ci", "--out", "reports/latest", "--baseline", BASELINE,
                *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, not timed tests (writes reports/bench/):

    1. pytest-benchmark over the `bench` profile -> pytest-benchmark.json (machine info included; runs are
       also saved under .benchmarks/ so `pytest benchmarks --benchmark-compare` works across runs);
    2. the harness on the `bench` profile with that JSON in its report -> reports/bench/matrix/;
    3. the harness's own speed on smoke and ci against one-process-per-config -> harness_speed.{json,md}
       (dominated by the ci profile's cold run, about 8 minutes on 2 cores, and the per-process baseline;
       `nox -s bench -- --quick` skips it).
    """
    _install(session)
    quick = "--quick" in session.posargs
    session.run("pytest", "benchmarks/test_latency.py", "-p", "no:cacheprovider", "--benchmark-json",
                "reports/bench/pytest-benchmark.json", "--benchmark-storage", "file://reports/bench/.benchmarks",
                "--benchmark-autosave")
    session.run("python", "-m", "harness", "run", "--profile", "bench", "--out", "reports/bench/matrix",
                "--no-progress", success_codes=[0, 1])
    session.run("python", "-m", "harness", "report", "reports/bench/matrix", "--benchmark-json",
                "reports/bench/pytest-benchmark.json", success_codes=[0, 1])
    if not quick:
        session.run("python", "benchmarks/harness_speed.py", "--profiles", "smoke", "ci", "--out", "reports/bench")
