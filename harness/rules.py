"""Known-incompatibility rules: the ``rules:`` schema of matrix.yaml and the engine that judges a raw cell
record by them (``xfail`` when a rule predicts the failure, ``xpass`` when a cell passes under one).

A rule applies to a cell when its ``when`` matches the cell's fields (:func:`matching_rules`), its ``env``
holds on this machine (CPU flags, package versions, GPU compute capability: :func:`rule_environment`) and its
``runtime_info`` conditions hold for what the runtime recorded it really did; it *predicts* the outcome when
the status class, the stage and the ``match`` regular expression on the reason agree (:func:`predicts`).
Records are cached raw; rules are applied by the coordinator, so editing a rule never needs a re-run.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import field_validator

from .benchmark import all_cpu_flags
from .cache import package_version
from .system import gpu_compute_capability
from .values import Strict as _Strict


class RuleEnv(_Strict):
    """Conditions of a rule on the machine it is judged on (all must hold for the rule to apply).

    ``cpu_flags``: flags that must all be present (``/proc/cpuinfo``, as recorded in environment.json);
    ``cpu_flags_absent``: flags that must all be absent; ``packages``: distribution -> PEP 440 specifier
    (``">=2024.0,<2027"``) or ``"absent"``; ``gpu_compute_capability``: specifier on the first GPU's
    compute capability (``"<8.0"``; a machine without a GPU never satisfies it)."""

    cpu_flags: List[str] = []
    cpu_flags_absent: List[str] = []
    packages: Dict[str, str] = {}
    gpu_compute_capability: Optional[str] = None

    @field_validator("packages")
    @classmethod
    def _specs(cls, v: Dict[str, str]) -> Dict[str, str]:
        for name, spec in v.items():
            if spec != "absent":
                _check_specifier(spec, f"packages.{name}: ", "'>=2024.0' or 'absent'")
        return v

    @field_validator("gpu_compute_capability")
    @classmethod
    def _cc(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            _check_specifier(v, "", "'<8.0'")
        return v


def _check_specifier(text: str, where: str, example: str) -> None:
    """Raise ValueError (naming ``where`` and an ``example``) unless ``text`` is a PEP 440 version specifier."""
    try:
        SpecifierSet(text)
    except InvalidSpecifier:
        raise ValueError(f"{where}{text!r} is not a version specifier such as {example}") from None


class Rule(_Strict):
    """Known incompatibility: cells matching ``when`` are expected to fail (at ``stage`` if given).

    A rule *predicts* a failure only when every condition holds: ``when`` (cell fields), ``env`` (the
    machine: :class:`RuleEnv`), ``runtime_info`` (what the runtime recorded it really did, e.g.
    ``{inference_precision: bf16}`` for OpenVINO; list values mean 'any of') and ``match``, a regular
    expression searched in the failure's reason (as ``pytest.raises(match=...)``). A failure the rule
    does not predict stays ``fail``/``error`` with a note; a pass under an applying rule is ``xpass``.
    """

    id: str
    when: Dict[str, Union[Any, List[Any]]]
    expect: Literal["fail", "crash"] = "fail"  # crash: the cell is expected to crash or time out
    stage: Optional[str] = None
    match: Optional[str] = None
    env: RuleEnv = RuleEnv()
    runtime_info: Dict[str, Union[Any, List[Any]]] = {}
    reason: str
    evidence: str

    @property
    def machine_conditioned(self) -> bool:
        """Whether the rule holds only on some machines (an ``env`` or ``runtime_info`` condition): its verdict
        may differ between two CPUs of the same run, which ``harness diff`` must not call a regression."""
        return bool(self.runtime_info) or self.env != RuleEnv()

    @field_validator("match")
    @classmethod
    def _regex(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"match {v!r} is not a valid regular expression ({e})") from None
        return v


def matching_rules(cell: Any, rules: Sequence[Rule]) -> List[Rule]:
    """Every rule whose ``when`` matches ``cell`` (list values mean 'any of'), in file order."""
    d = asdict(cell)
    out = []
    for rule in rules:
        ok = True
        for key, val in rule.when.items():
            vals = val if isinstance(val, list) else [val]
            cur = d[key]
            if isinstance(cur, tuple):
                vals = [tuple(v) if isinstance(v, list) else v for v in vals]
            if cur not in vals:
                ok = False
                break
        if ok:
            out.append(rule)
    return out


def matching_rule(cell: Any, rules: Sequence[Rule]) -> Optional[Rule]:
    """First rule whose ``when`` matches ``cell`` (list values mean 'any of')."""
    found = matching_rules(cell, rules)
    return found[0] if found else None


def rule_environment() -> Dict[str, Any]:
    """Facts rules may be conditioned on (torch-free): every CPU flag, package versions are looked up
    on demand, the first GPU's compute capability (None without one)."""
    return {"cpu_flags": set(all_cpu_flags()), "gpu_compute_capability": gpu_compute_capability()}


def _env_holds(rule: Rule, env: Dict[str, Any]) -> bool:
    e = rule.env
    flags = env.get("cpu_flags", set())
    if any(f not in flags for f in e.cpu_flags) or any(f in flags for f in e.cpu_flags_absent):
        return False
    for name, spec in e.packages.items():
        have = package_version(name)
        if spec == "absent":
            if have is not None:
                return False
            continue
        try:
            if have is None or Version(have) not in SpecifierSet(spec):
                return False
        except InvalidVersion:
            return False
    if e.gpu_compute_capability is not None:
        cc = env.get("gpu_compute_capability")
        if cc is None or Version(cc) not in SpecifierSet(e.gpu_compute_capability):
            return False
    return True


def _runtime_info(rec: Dict[str, Any]) -> Dict[str, Any]:
    info = rec.get("runtime_info")
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except ValueError:
            return {}
    return info if isinstance(info, dict) else {}


def _runtime_info_holds(rule: Rule, rec: Dict[str, Any]) -> bool:
    """Every ``runtime_info`` condition of ``rule`` holds for what the cell's runtime recorded. A cell that
    never got as far as recording it (an export error) satisfies no such condition."""
    if not rule.runtime_info:
        return True
    info = _runtime_info(rec)
    for key, want in rule.runtime_info.items():
        vals = want if isinstance(want, list) else [want]
        if key not in info or str(info[key]).lower() not in [str(v).lower() for v in vals]:
            return False
    return True


def applicable_rules(rec: Dict[str, Any], rules: Sequence[Rule], env: Optional[Dict[str, Any]] = None) -> List[Rule]:
    """Of ``rules`` (already matching the cell's fields), those whose machine (``env``) and runtime
    (``runtime_info``) conditions hold for this record."""
    env = rule_environment() if env is None else env
    return [r for r in rules if _env_holds(r, env) and _runtime_info_holds(r, rec)]


def predicts(rule: Rule, rec: Dict[str, Any]) -> bool:
    """True when ``rule`` predicts the raw record's outcome: the status class, the stage (when given) and
    the ``match`` regular expression on the reason (when given)."""
    predicted = ("fail", "error") if rule.expect == "fail" else ("crash", "timeout")
    if rec["status"] not in predicted or (rule.stage is not None and rule.stage != rec.get("stage")):
        return False
    return rule.match is None or re.search(rule.match, rec.get("reason") or "") is not None


def pick_rule(rec: Dict[str, Any], rules: Sequence[Rule], env: Optional[Dict[str, Any]] = None) -> Optional[Rule]:
    """Of the rules matching a cell whose conditions hold, the first that predicts its raw outcome, else
    the first one. A cell can match several (e.g. an fp16 dynamo export run on OpenVINO: the export rule
    predicts its failure, the OpenVINO fp16 parity rule would not)."""
    rules = applicable_rules(rec, rules, env)
    for rule in rules:
        if predicts(rule, rec):
            return rule
    return rules[0] if rules else None


def apply_rule(rec: Dict[str, Any], rule: Optional[Rule]) -> Dict[str, Any]:
    """Turn a raw record's status into its judged status under ``rule`` (a known incompatibility).

    A failure the rule predicts (:func:`predicts`: status class, stage and ``match``) becomes ``xfail``;
    another failure keeps its status with a note saying what the rule expected; a pass becomes ``xpass``."""
    rec = dict(rec)
    rec["rule"] = rule.id if rule else ""
    if rule is None:
        return rec
    status, stage = rec["status"], rec.get("stage")
    failed = ("fail", "error") if rule.expect == "fail" else ("crash", "timeout")
    if predicts(rule, rec):
        rec["status"] = "xfail"
        rec["reason"] = f"{rec.get('reason', '')} [expected: {rule.reason}]"
    elif status in failed and rule.stage is not None and rule.stage != stage:
        rec["reason"] = f"{rec.get('reason', '')} [rule {rule.id} expected failure at stage {rule.stage!r}]"
    elif status in failed:
        rec["reason"] = (f"{rec.get('reason', '')} [rule {rule.id} expected a failure matching {rule.match!r}; "
                         f"this one is not it]")
    elif status == "pass":
        rec["status"] = "xpass"
        rec["reason"] = f"passed although rule {rule.id!r} expects failure ({rule.reason})"
    return rec
