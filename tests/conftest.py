"""Fixtures shared by the test folders."""

import pytest

import app


class Cli:
    """`app.main(argv)` as a user runs it: the exit code and what it wrote to stderr."""

    def __init__(self, capsys: pytest.CaptureFixture) -> None:
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str]:
        code = app.main(list(argv))
        return code, self.capsys.readouterr().err

    @staticmethod
    def assert_one_line_error(err: str, message: str) -> None:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


@pytest.fixture
def cli(capsys) -> Cli:
    return Cli(capsys)
