"""A traced network as a dataflow graph (JAX's jaxpr): nested calls inlined into one list of primitive
equations, which can be split by what depends on some of its inputs and evaluated (also inside `jit` and
`vmap`). The topology of any Flax model (`models/topology.py`) and the evaluation engine's split of a
network into the part computed once and the part computed per variant (`core/variants.py`) rest on it.

  graph = flatten(jax.make_jaxpr(f)(*args))      # f's inputs and outputs, primitives only
  head, tail = graph.split(unknown={2})           # what depends on input 2, and what does not
  outs = tail.evaluate(head.evaluate(args0, args1), args2)

Calls inlined: pjit (jit), closed and core calls, custom_jvp / custom_vjp calls (their primal function:
the rules for derivatives are dropped, which the forward evaluations here never need), remat. Every
equation's outputs get fresh vars: the same cached jaxpr (a jitted function's) inlined twice would
otherwise define the same var twice.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

import jax
from jax.extend import core as jcore

# primitive name -> the parameter holding the called jaxpr, whose inputs are the equation's inputs
CALLS = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
         "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
         "remat": "jaxpr", "checkpoint": "jaxpr"}


@dataclasses.dataclass(frozen=True, eq=False)
class Const:
  """A constant of the traced function (a closed-over array)."""

  value: Any


@dataclasses.dataclass(frozen=True, eq=False)
class Eqn:
  primitive: Any
  params: dict
  invars: tuple  # Var | Literal | Const
  outvars: tuple  # Var (DropVar for unused outputs)


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
  """Primitive equations from `invars` to `outvars` (atoms: jaxpr Vars, Literals, Consts)."""

  invars: tuple
  outvars: tuple
  eqns: tuple[Eqn, ...]

  def evaluate(self, *args) -> list:
    """The outputs for input values `args` (arrays or tracers), binding each primitive in order."""
    env = self._run(args)
    return [_read(env, a) for a in self.outvars]

  def _run(self, args) -> dict:
    env = dict(zip(self.invars, args))
    for e in self.eqns:
      values = e.primitive.bind(*(_read(env, a) for a in e.invars), **e.params)
      for var, value in zip(e.outvars, values if e.primitive.multiple_results else (values,)):
        if not isinstance(var, jcore.DropVar):
          env[var] = value
    return env

  def values(self, args: Sequence, wanted: Sequence) -> list:
    """The values of the vars `wanted` (any in the graph) for input values `args`."""
    env = self._run(args)
    return [_read(env, a) for a in wanted]

  def depends(self, sources: Iterable) -> set:
    """The vars that depend on any of `sources` (inputs or vars), `sources` included."""
    tainted = set(sources)
    for e in self.eqns:
      if any(_is_var(a) and a in tainted for a in e.invars):
        tainted.update(v for v in e.outvars if not isinstance(v, jcore.DropVar))
    return tainted

  def split(self, unknown: Sequence[int]) -> tuple[Graph, Graph]:
    """(head, tail): `head` takes the inputs not in `unknown` (positions) and returns the values `tail`
    needs besides the unknown inputs; `tail` takes (those values..., the unknown inputs...) and returns the
    outputs. What does not depend on the unknown inputs is computed by `head` once, whatever they are."""
    unknown_vars = [self.invars[i] for i in unknown]
    tainted = self.depends(unknown_vars)
    tail_eqns = [e for e in self.eqns if any(_is_var(a) and a in tainted for a in e.invars)]
    head_eqns = [e for e in self.eqns if not any(_is_var(a) and a in tainted for a in e.invars)]
    needed, seen = [], set()
    for a in [a for e in tail_eqns for a in e.invars] + list(self.outvars):
      if _is_var(a) and a not in tainted and a not in seen:
        seen.add(a)
        needed.append(a)
    known = tuple(v for i, v in enumerate(self.invars) if i not in set(unknown))
    head = Graph(known, tuple(needed), tuple(_live(head_eqns, needed)))
    return head, Graph(tuple(needed) + tuple(unknown_vars), self.outvars, tuple(tail_eqns))


def flatten(closed: jcore.ClosedJaxpr) -> Graph:
  """`closed` with every nested call (`CALLS`) inlined."""
  eqns: list[Eqn] = []
  outs = _inline(closed.jaxpr, [Const(c) for c in closed.consts], list(closed.jaxpr.invars), eqns)
  return Graph(tuple(closed.jaxpr.invars), tuple(outs), tuple(eqns))


def trace(f, *args) -> Graph:
  """The flattened graph of `f(*args)`, whose inputs are the leaves of `args` and outputs the leaves of
  its result."""
  return flatten(jax.make_jaxpr(lambda *a: jax.tree.leaves(f(*a)))(*args))


def primitives(closed: jcore.ClosedJaxpr) -> set[str]:
  """The names of every primitive `closed` runs, in nested jaxprs too (calls, loops, conditionals, the
  rules of custom derivatives)."""
  names, todo = set(), [closed.jaxpr]
  while todo:
    for e in todo.pop().eqns:
      names.add(e.primitive.name)
      for value in e.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          if isinstance(sub, (jcore.ClosedJaxpr, jcore.Jaxpr)):
            todo.append(getattr(sub, "jaxpr", sub))
  return names


def _is_var(a) -> bool:
  return isinstance(a, jcore.Var)


def _read(env: dict, a):
  if isinstance(a, jcore.Literal):
    return a.val
  if isinstance(a, Const):
    return a.value
  return env[a]


def _called(e) -> jcore.ClosedJaxpr | None:
  key = CALLS.get(e.primitive.name)
  sub = e.params.get(key) if key else None
  if sub is None:
    return None
  return sub if isinstance(sub, jcore.ClosedJaxpr) else jcore.ClosedJaxpr(sub, [])


def _inline(jaxpr: jcore.Jaxpr, consts: list, ins: list, eqns: list[Eqn]) -> list:
  env: dict = dict(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, ins))
  resolve = lambda a: a if isinstance(a, jcore.Literal) else env.get(a, a)
  for e in jaxpr.eqns:
    args = [resolve(a) for a in e.invars]
    sub = _called(e)
    if sub is not None and len(sub.jaxpr.invars) == len(args):
      outs = _inline(sub.jaxpr, [Const(c) for c in sub.consts], args, eqns)
      env.update((v, o) for v, o in zip(e.outvars, outs) if not isinstance(v, jcore.DropVar))
    else:  # fresh output vars: a cached jaxpr (jit's) inlined twice must not share them
      outs = tuple(v if isinstance(v, jcore.DropVar) else jcore.Var(v.aval) for v in e.outvars)
      env.update((v, o) for v, o in zip(e.outvars, outs) if not isinstance(v, jcore.DropVar))
      eqns.append(Eqn(e.primitive, dict(e.params), tuple(args), outs))
  return [resolve(a) for a in jaxpr.outvars]


def _live(eqns: list[Eqn], outputs: Sequence) -> list[Eqn]:
  """The equations `outputs` need (dead code removed), in order."""
  needed = {a for a in outputs if _is_var(a)}
  keep = []
  for e in reversed(eqns):
    if any(v in needed for v in e.outvars):
      keep.append(e)
      needed.update(a for a in e.invars if _is_var(a))
  return keep[::-1]
