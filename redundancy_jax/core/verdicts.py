"""A claim and the verdict computed on it from a run's numbers: one type for the report's claims (the
reproduction page) and the related-work experiments' headlines.

  v = Verdict.decide("the error grows with K", ok, evidence="K = 2 -> 8: 0.045 -> 0.395",
                     rule="eps(K_max) > 1.5 eps(K_min)", numbers={...})
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "not testable"
VERDICTS = (HOLDS, FAILS, UNTESTABLE)
SIGMAS = 3.0  # an effect "exceeds its control" when it is more than this many of the control's standard deviations
COUNT_FLOOR = 1 / SIGMAS  # the smallest spread of an integer count: SIGMAS of it make one count


def beyond_control(effect: float, spread: float, sigmas: float = SIGMAS) -> bool:
  """Whether `effect` (signed in the claim's direction) exceeds `sigmas` times the control's `spread`."""
  return effect > sigmas * spread


def count_spread(values) -> float:
  """The standard deviation of a count over replicas, at least `COUNT_FLOOR` (a control that is the same
  count on every replica still has the resolution of one count)."""
  return max(float(np.std(values)), COUNT_FLOOR)


@dataclasses.dataclass(frozen=True)
class Verdict:
  """What a claim says, whether this run's numbers support it, and why."""

  claim: str
  verdict: str  # one of VERDICTS
  evidence: str  # the numbers that decide it, in words
  rule: str = ""  # the rule applied to them
  numbers: dict = dataclasses.field(default_factory=dict)  # the same numbers, for files and tests
  section: str = ""  # where the report makes the claim
  effect: float | None = None  # the effect the rule measures ...
  control_spread: float | None = None  # ... and the spread of the same statistic on its control

  @classmethod
  def decide(cls, claim: str, ok: bool, evidence: str, **fields) -> "Verdict":
    return cls(claim, HOLDS if ok else FAILS, evidence, **fields)

  @classmethod
  def untestable(cls, claim: str, why: str, **fields) -> "Verdict":
    return cls(claim, UNTESTABLE, why, **fields)

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, obj: dict) -> "Verdict":
    return cls(**obj)
