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
# How a verdict's effect meets its control (`Verdict.test`): the effect, signed in the claim's direction,
# exceeds SIGMAS control spreads; its size does, either way; an equality claim's effect (a distance)
# stays within `tolerance`, the control showing the noise beside it; or the rule alone decides (the
# related work's published criteria), the effect and control stated beside it for scale.
ABOVE, EITHER_WAY, WITHIN, RULE_ONLY = "above", "either way", "within", "rule only"
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
  control_spread: float | None = None  # ... and one standard deviation of the same statistic on its control
  unit: str = ""  # of the effect and the control's spread
  measured_on: str = ""  # the layer or run the effect comes from
  test: str = ""  # how the effect meets the control: ABOVE, EITHER_WAY, WITHIN or RULE_ONLY ("": not recorded)
  tolerance: float | None = None  # WITHIN: the largest effect that holds

  @classmethod
  def decide(cls, claim: str, ok: bool, evidence: str, **fields) -> "Verdict":
    return cls(claim, HOLDS if ok else FAILS, evidence, **fields)

  @classmethod
  def untestable(cls, claim: str, why: str, **fields) -> "Verdict":
    return cls(claim, UNTESTABLE, why, **fields)

  def comparison(self) -> str:
    """The effect against its control in words, e.g. "5.8 > 3 × 1 = 3 points: met"; "" without both."""
    if self.effect is None or self.control_spread is None or not self.test:
      return ""
    e, s, unit = self.effect, self.control_spread, f" {self.unit}" if self.unit else ""
    if self.test == WITHIN:
      met = "met" if self.effect <= self.tolerance else "not met"
      return f"{e:.3g} <= {self.tolerance:g}{unit} (tolerance): {met}; the control's spread {s:.3g} shows the noise"
    if self.test == RULE_ONLY:
      return f"for scale: the effect is {abs(e) / s:.1f} control spreads" if s > 0 else "for scale: the control has no spread"
    size = f"|{e:.3g}| = {abs(e):.3g}" if self.test == EITHER_WAY else f"{e:.3g}"
    met = "met" if beyond_control(abs(e) if self.test == EITHER_WAY else e, s) else "not met"
    return f"{size} > {SIGMAS:g} × {s:.3g} = {SIGMAS * s:.3g}{unit}: {met}"

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, obj: dict) -> "Verdict":
    return cls(**obj)
