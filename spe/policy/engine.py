"""Rego engines: regopy in-process (the default), or an OPA server over HTTP."""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from regopy import Interpreter, RegoError


class PolicyEvaluationError(Exception):
    """Policy could not be evaluated (syntax error, missing rule, engine unreachable)."""


class PolicyEngine(Protocol):
    def evaluate(self, path: str, input: dict[str, Any]) -> Any:
        """The value of `data.<path>` for `input`; raise PolicyEvaluationError if unknown."""
        ...


def policy_files(policy_dir: Path, *, tests: bool = False) -> list[Path]:
    files = sorted(policy_dir.rglob("*.rego"))
    return [f for f in files if f.stem.endswith("_test") == tests]


class EmbeddedEngine:
    """regopy's interpreter over every `.rego` file of the policy folder.

    Modules are parsed once, and each decision (`<package>/<rule>`) is compiled once into a
    bundle on first use: a query through a bundle takes about half a millisecond, where a
    plain query recompiles every module (about 20 ms). An interpreter is not thread-safe,
    so queries take a lock.

    The modules never change after loading, so while no policy calls a builtin whose
    result depends on more than its arguments (time, randomness, HTTP: `IMPURE`), a
    decision is a function of its input: the last `CACHED` answers are kept by (decision,
    input) and a repeated input (the same caller at the same door, the disclosure rules of
    a tier) is answered from them. A policy folder that names such a builtin anywhere gets
    no cache. Failures are never kept: they are raised again on every call.
    """

    CACHED = 4096
    IMPURE = re.compile(r"\b(time\.now_ns|rand\.|uuid\.|http\.send|opa\.runtime|net\.lookup)")

    def __init__(self, policy_dir: Path, *, extra_files: list[Path] | None = None) -> None:
        self.policy_dir = policy_dir
        self._lock = threading.Lock()
        self._interp = Interpreter()
        self._bundles: dict[str, Any] = {}
        self._answers: OrderedDict[tuple[str, str], str] = OrderedDict()  # -> JSON text
        self._load_error: str | None = None
        files = policy_files(policy_dir) + list(extra_files or [])
        if not files:
            self._load_error = f"no policy files under {policy_dir}"
        self._cache = True
        for f in files:
            try:
                text = f.read_text()
                self._interp.add_module(f.name, text)
                if self.IMPURE.search(text):
                    self._cache = False
            except (RegoError, OSError) as exc:
                # Kept, not raised: every later decision denies and says why.
                self._load_error = f"policy file {f.name} could not be loaded: " + _first_line(
                    str(exc)
                )

    def _bundle(self, entrypoint: str):
        bundle = self._bundles.get(entrypoint)
        if bundle is None:
            bundle = self._interp.build(None, [entrypoint])
            self._bundles[entrypoint] = bundle
        return bundle

    def evaluate(self, path: str, input: dict[str, Any]) -> Any:
        if self._load_error:
            raise PolicyEvaluationError(self._load_error)
        entrypoint = path.replace(".", "/")
        query = "data." + entrypoint.replace("/", ".")
        term = json.dumps(input, sort_keys=True)
        key = (entrypoint, term)
        with self._lock:
            text = self._answers.get(key)
            if text is not None:
                self._answers.move_to_end(key)
                return json.loads(text)  # a fresh object: callers may change theirs
            text = self._evaluate(entrypoint, query, term)
            if self._cache:
                self._answers[key] = text
                if len(self._answers) > self.CACHED:
                    self._answers.popitem(last=False)
        return json.loads(text)

    def _evaluate(self, entrypoint: str, query: str, term: str) -> str:
        """The decision's value as JSON text; PolicyEvaluationError if there is none. The
        caller holds the lock."""
        try:
            self._interp.set_input_term(term)
            output = self._interp.query_bundle_entrypoint(self._bundle(entrypoint), entrypoint)
        except RegoError as exc:
            raise PolicyEvaluationError(_first_line(str(exc))) from exc
        except ValueError as exc:
            # regopy renders some strings (from functions) as invalid JSON
            raise PolicyEvaluationError(f"unreadable engine output for {query}") from exc
        # regopy cannot render a failed output (it crashes), so check first.
        if not output.ok():
            raise PolicyEvaluationError(f"evaluation of {query} failed")
        text = str(output)
        if text == "undefined":
            raise PolicyEvaluationError(f"{query} is undefined")
        try:
            return json.dumps(json.loads(text)["expressions"][0])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise PolicyEvaluationError(f"unexpected engine output for {query}") from exc


class OpaEngine:
    """An OPA server, through opa-python-client, for deployments that run one."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        from opa_client import create_opa_client

        parsed = urlparse(url)
        self.client = create_opa_client(
            host=parsed.hostname or "localhost",
            port=parsed.port or (443 if parsed.scheme == "https" else 8181),
            ssl=parsed.scheme == "https",
            timeout=timeout,
        )

    def evaluate(self, path: str, input: dict[str, Any]) -> Any:
        package, _, rule = path.replace(".", "/").rpartition("/")
        try:
            answer = self.client.query_rule(input_data=input, package_path=package,
                                            rule_name=rule)
        except Exception as exc:  # the client raises several unrelated types
            raise PolicyEvaluationError(f"OPA query {path} failed: {exc}") from exc
        if not isinstance(answer, dict) or "result" not in answer:
            raise PolicyEvaluationError(f"OPA has no result for {path}")
        return answer["result"]


def _first_line(text: str) -> str:
    # regopy renders errors as an S-expression; its `errormsg` lines are the readable part.
    messages = re.findall(r"errormsg \d+:([^)]*)\)", text)
    if messages:
        return "; ".join(dict.fromkeys(m.strip() for m in messages))[:300]
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return "policy error"
