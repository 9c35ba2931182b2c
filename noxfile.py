"""nox sessions: `nox -s tests` (the CI test command), `nox -s matrix` (the main job), `nox -s bench`
(benchmarks: the harness's own speed against the per-process baseline)."""

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

CONSTRAINTS = ("-c", "constraints.txt")


def _install(session: nox.Session) -> None:
    session.install(*CONSTRAINTS, "-e", ".[onnx,test]")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit + end-to-end tests (a smoke matrix over real exports)."""
    _install(session)
    session.run("pytest", *session.posargs)


@nox.session
def matrix(session: nox.Session) -> None:
    """The main job: profile `ci`, report in reports/latest/ (extra args go to `harness run`)."""
    _install(session)
    session.run("python", "-m", "harness", "run", "--profile", "ci", "--out", "reports/latest", *session.posargs,
                success_codes=[0, 1])


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (not timed tests): harness speed on the smoke and ci profiles -> reports/bench/."""
    _install(session)
    session.run("python", "benchmarks/harness_speed.py", "--profiles", "smoke", "ci", "--out", "reports/bench",
                *session.posargs)
