"""Outcomes: how a delivery is to be settled. The handler chain returns one; the consumer applies it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OutcomeKind = Literal["ack", "skip", "nak", "term", "dead_letter"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with a delivery.

    - ``ack``: handled; ``skip``: acked without handling, ``reason`` says why (logged);
    - ``nak``: hand it back, redelivered after ``delay`` seconds;
    - ``term``: never deliver it again (``error``, when set, is logged with its traceback);
    - ``dead_letter``: store it in the dead-letter stream, then term; ``reason`` is the short
      reason recorded with it (``rejected``, ``undecodable``, …), ``error`` or ``detail`` what happened.

    Middleware may return any of them instead of what the step inside it returned. After the
    dead-lettering step, ``dead_lettered`` names the reason of the dead letter a ``term`` follows.
    """

    kind: OutcomeKind
    reason: str | None = None
    delay: float | None = None
    error: BaseException | None = None
    detail: str | None = None
    dead_lettered: str | None = None

    @property
    def label(self) -> str:
        """How metrics and traces name it: ``ack``, ``skipped``, ``nak``, ``term`` or ``dead_letter``."""
        if self.dead_lettered is not None:
            return "dead_letter"
        return "skipped" if self.kind == "skip" else self.kind

    @staticmethod
    def ack() -> Outcome:
        return ACK

    @staticmethod
    def skip(reason: str) -> Outcome:
        return Outcome("skip", reason)

    @staticmethod
    def nak(delay: float | None = None, reason: str | None = None) -> Outcome:
        return Outcome("nak", reason, delay)

    @staticmethod
    def term(reason: str, error: BaseException | None = None) -> Outcome:
        return Outcome("term", reason, error=error)

    @staticmethod
    def dead_letter(reason: str, *, error: BaseException | None = None, detail: str | None = None) -> Outcome:
        return Outcome("dead_letter", reason, error=error, detail=detail)


ACK = Outcome("ack")
