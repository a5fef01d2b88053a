"""Which verifiers score which task, and `Scorer`, which sums them for one reply and never raises for a bad row.

Every verifier is a function `(meta, text) -> RewardResult` with named parts; a task's reward is the sum over the
functions listed for it in `RewardServiceConfig.reward_functions` (default DEFAULT_REWARD_FUNCTIONS). A row whose
scoring fails (bad meta, unknown task, a reply over `max_reply_chars`, math-verify timeout, sandbox refusing to run,
any exception) gets total 0, no parts, and `error = "<kind>: <detail>"`, kind one of ERROR_KINDS.
Nothing here is created at import: each `Scorer` owns its sandbox and its math-verify children.
"""
from __future__ import annotations

import copy
import functools
import logging
import threading
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from common.messages import RewardResult
from rewards.verifiers import coding, countdown, gsm8k, math_answer, sudoku
from rewards.verifiers.text import MetaError
from rewards.verifiers.math_answer import MathCheckError, MathChecker
from rewards.sandbox import Sandbox, SandboxConfig, SandboxUnavailable

log = logging.getLogger(__name__)
Verifier = Callable[[dict, str], RewardResult]

DEFAULT_REWARD_FUNCTIONS: dict[str, list[str]] = {
    "sudoku": ["sudoku"],
    "countdown": ["countdown"],
    "gsm8k": ["xmlcount", "soft_format", "strict_format", "int_answer", "correctness"],
    "math": ["math_correctness", "math_format"],
    "code": ["code_format", "code_tests"],
}
ERROR_KINDS = ("bad_input", "undecodable", "too_long", "unknown_task", "bad_meta", "math_check",
               "sandbox_unavailable", "exception", "timeout", "worker_died")
SANDBOX_FUNCTIONS = ("code_tests",)  # functions that run generated code: their tasks need a working sandbox


class RewardServiceConfig(BaseModel):
    """Everything the reward service needs; deploy maps the run config's `reward.service` onto this."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    reward_functions: dict[str, list[str]] = Field(default_factory=lambda: copy.deepcopy(DEFAULT_REWARD_FUNCTIONS))
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    math_processes: int = Field(default=1, description="math-verify child processes per Scorer")
    math_timeout_s: float = Field(default=10.0, description="outer timeout of one math-verify request")
    threads: int | None = Field(default=None, ge=1, description="rows scored concurrently per worker (sandbox runs "
                                "are processes); None: the CPUs the worker reserved")
    row_timeout_s: float = Field(default=120.0, description="safety net per row on top of the inner timeouts")
    max_reply_chars: int = Field(default=1 << 16, ge=1, description="longer replies score 0 with a 'too_long' error "
                                 "before any verifier sees them (counted in errors/too_long)")


def _pure_functions() -> dict[str, Verifier]:
    return {
        "sudoku": sudoku.sudoku_reward,
        "countdown": countdown.countdown_reward,
        "xmlcount": gsm8k.xmlcount_reward,
        "xmlcount_d1": gsm8k.xmlcount_d1_reward,
        "soft_format": gsm8k.soft_format_reward,
        "strict_format": gsm8k.strict_format_reward,
        "int_answer": gsm8k.int_reward,
        "correctness": gsm8k.correctness_reward,
        "math_format": math_answer.math_format,
        "code_format": coding.code_format,
    }


FUNCTION_NAMES = sorted([*_pure_functions(), "math_correctness", "code_tests"])


def error_kind(error: str | None) -> str | None:
    """The kind of an error string made by this service ("kind: detail")."""
    return None if error is None else error.split(":", 1)[0]


def error_result(kind: str, detail: str) -> RewardResult:
    return RewardResult(total=0.0, parts={}, error=f"{kind}: {detail}")


def as_text(text: object) -> str | RewardResult:
    """The reply as valid text, or the error result for a row that is not text or not valid UTF-8."""
    if isinstance(text, (bytes, bytearray)):
        try:
            return bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            return error_result("undecodable", f"reply is not valid UTF-8 ({exc.reason} at byte {exc.start})")
    if not isinstance(text, str):
        return error_result("bad_input", f"reply must be str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates, e.g. from decoding with errors="surrogateescape"
        return error_result("undecodable", f"reply holds characters that are not valid UTF-8 ({exc.reason})")
    return text


class Scorer:
    """Scores replies of any task by the configured functions; owns the sandbox and the math-verify children."""

    def __init__(self, config: RewardServiceConfig | None = None) -> None:
        self.config = config or RewardServiceConfig()
        self.sandbox = Sandbox(self.config.sandbox)
        self._checker: MathChecker | None = None
        self._checker_lock = threading.Lock()
        self.functions: dict[str, Verifier] = {
            **_pure_functions(),
            "math_correctness": self._math_correctness,
            "code_tests": functools.partial(coding.code_tests, sandbox=self.sandbox),
        }
        for task, names in self.config.reward_functions.items():
            unknown = [name for name in names if name not in self.functions]
            if unknown or not names:
                raise ValueError(f"reward_functions[{task!r}]: unknown or empty {unknown or names}; "
                                 f"choose from {FUNCTION_NAMES}")

    def _math_correctness(self, meta: dict, text: str) -> RewardResult:
        with self._checker_lock:  # created on first use: tasks without math never start a child
            if self._checker is None:
                self._checker = MathChecker(self.config.math_processes, self.config.math_timeout_s)
        return math_answer.math_correctness(meta, text, checker=self._checker)

    def needs_sandbox(self) -> list[str]:
        """Tasks whose configured functions run generated code."""
        return sorted(task for task, names in self.config.reward_functions.items()
                      if any(name in SANDBOX_FUNCTIONS for name in names))

    def check_ready(self) -> dict[str, str]:
        """Fail now, not row by row: raises SandboxUnavailable if a configured task needs the sandbox and it cannot
        run here. Returns the sandbox's probe ({"mode", "seccomp", "cgroup"}) or {} when no task needs it."""
        tasks = self.needs_sandbox()
        if not tasks:
            return {}
        try:
            return self.sandbox.check_ready()
        except SandboxUnavailable as exc:
            raise SandboxUnavailable(f"reward tasks {tasks} run generated code, but {exc}") from exc

    def score(self, task: str, meta: dict, text: object) -> RewardResult:
        """Sum of the task's functions on one reply; any failure gives total 0 and a "kind: detail" error."""
        text = as_text(text)
        if isinstance(text, RewardResult):
            return text
        if len(text) > self.config.max_reply_chars:
            return error_result("too_long", f"reply of {len(text)} characters is over max_reply_chars="
                                            f"{self.config.max_reply_chars}")
        names = self.config.reward_functions.get(task)
        if names is None:
            return error_result("unknown_task", f"no reward functions for task {task!r}; "
                                                f"known: {sorted(self.config.reward_functions)}")
        parts: dict[str, float] = {}
        try:
            for name in names:
                parts.update(self.functions[name](meta, text).parts)
        except MetaError as exc:
            return error_result("bad_meta", str(exc))
        except MathCheckError as exc:
            return error_result("math_check", str(exc))
        except SandboxUnavailable as exc:
            return error_result("sandbox_unavailable", str(exc))
        except Exception as exc:  # noqa: BLE001  (one bad row must never fail a batch)
            log.exception("reward function failed on a %s row", task)
            return error_result("exception", f"{type(exc).__name__}: {exc}")
        return RewardResult(total=sum(parts.values()), parts=parts)

    def close(self) -> None:
        if self._checker is not None:
            self._checker.close()
        self.sandbox.close()
