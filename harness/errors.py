"""One error tree for the whole harness; each error knows its exit code.

    HarnessError (exit 2 unless said otherwise)
    ├── UsageError            bad command-line input
    ├── ScenarioError         a scenario file that cannot be used (names file:line key)
    ├── PrerequisiteError     something the run needs is missing (Docker engine, image, binary)
    ├── DeployError           a deployer could not bring a strategy up or down
    ├── NotBuiltError         a subcommand that is not built yet says so honestly
    └── GateFailed (exit 1)   a run finished but a threshold / SLO gate failed

The CLI prints ``str(error)`` as one line on stderr and exits with ``error.exit_code``;
no traceback reaches the user for any of these.
"""

from __future__ import annotations


class HarnessError(Exception):
    exit_code: int = 2


class UsageError(HarnessError):
    pass


class ScenarioError(HarnessError):
    """A scenario problem, located: ``file:line: key.path: message``."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.file, self.line, self.key, self.detail = file, line, key, message
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        what = f"{key}: " if key else ""
        super().__init__(f"{where}{what}{message}")


class PrerequisiteError(HarnessError):
    pass


class DeployError(HarnessError):
    pass


class NotBuiltError(HarnessError):
    pass


class GateFailed(HarnessError):
    exit_code = 1
