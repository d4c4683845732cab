"""Corrections: an institution retracting a period it reported by mistake, moving a
period's start or end date, or reopening a period it ended by mistake.

Each item names its relationship (customer, role, kind) and the period by its start date
as the register holds it, and carries a reason from a fixed list. A call is all or
nothing, like Report. The relationship keeps a note of each correction (what, when, why,
and the date it replaced), which the institution sees in ListOwn; a retraction keeps
nothing of the retracted period, and when it takes the last period the relationship is
gone entirely.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date

from kfr_grpc.errors import NotFound, Rejection
from kfr_grpc.register.customer_ids import CustomerId, parse_customer
from kfr_grpc.register.model import (
    Correction,
    CorrectionAction,
    CorrectionReason,
    Corrections,
    History,
    KindChoice,
    ProductKind,
    ReasonChoice,
    Role,
    RoleChoice,
    UnknownNumber,
)
from kfr_grpc.register.periods import (
    correct_end,
    correct_start,
    period_starting,
    reopen_period,
    retract_period,
)
from kfr_grpc.register.reports import early_start, role_problem
from kfr_grpc.register.storage import WriteTxn
from kfr_grpc.register.values import InvalidValue, Rejections, parse_date

_NO_SUCH_PERIOD = "no period of this relationship at this institution starts on start_date"
# What a correction may change (``CorrectItem.change``).
DATE_CHANGES = (CorrectionAction.START_CORRECTED, CorrectionAction.END_CORRECTED)
CHANGES = (*DATE_CHANGES, CorrectionAction.REOPENED)
# The contract's field of each date change (where its faults are named).
_DATE_FIELD = {
    CorrectionAction.START_CORRECTED: "new_start_date",
    CorrectionAction.END_CORRECTED: "new_end_date",
}


@dataclass(frozen=True, slots=True)
class RetractItem:
    customer_id: str
    role: RoleChoice
    kind: KindChoice
    start_date: str  # the start of the period to retract, as the register holds it
    reason: ReasonChoice


@dataclass(frozen=True, slots=True)
class CorrectItem:
    customer_id: str
    role: RoleChoice
    kind: KindChoice
    start_date: str  # the start of the period to correct, as the register holds it
    change: CorrectionAction | UnknownNumber | None  # one of CHANGES; None: not given
    new_date: str  # the corrected start or end (not for a reopening)
    reason: ReasonChoice


@dataclass(frozen=True, slots=True)
class _Target:
    """A validated item: which period of which relationship, and what to do."""

    index: int
    customer: CustomerId
    role: Role
    kind: ProductKind
    start: date
    reason: CorrectionReason
    action: CorrectionAction
    new_date: date | None = None


@dataclass(frozen=True, slots=True)
class CorrectionResult:
    changed: int  # items that changed the register
    unchanged: int  # items that asked for what the register already held
    reasons: dict[str, int]  # items by reason code

    def counts(self, changed_name: str) -> dict[str, int]:
        counts = {changed_name: self.changed, "unchanged": self.unchanged}
        counts.update({f"reason {reason}": count for reason, count in self.reasons.items()})
        return counts


class _Parsed(Rejections):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[_Target] = []


def parse_retractions(
    items: Sequence[RetractItem], *, allow_synthetic: bool, today: date
) -> _Parsed:
    parsed = _Parsed()
    for index, item in enumerate(items):
        named = _parse_named(parsed, index, item, allow_synthetic=allow_synthetic, today=today)
        if named is not None:
            parsed.targets.append(named.target(index, CorrectionAction.RETRACTED))
    return parsed


def parse_corrections(
    items: Sequence[CorrectItem], *, allow_synthetic: bool, today: date
) -> _Parsed:
    parsed = _Parsed()
    for index, item in enumerate(items):
        named = _parse_named(parsed, index, item, allow_synthetic=allow_synthetic, today=today)
        action = _parse_change(parsed, index, item.change)
        new_date = None
        if action in DATE_CHANGES and not item.new_date.strip():
            parsed.add(
                _DATE_FIELD[action], "is required: the corrected date", "NEW_DATE_MISSING", index
            )
        elif action in DATE_CHANGES:
            new_date = parsed.parse(
                _DATE_FIELD[action], parse_date, item.new_date, today, item=index
            )
        elif action is CorrectionAction.REOPENED and item.new_date.strip():
            parsed.add("reopen", "takes no new date", "INVALID_VALUE", index)
        if action is CorrectionAction.START_CORRECTED and named is not None and new_date:
            early = early_start(new_date.toordinal(), named.customer, named.born)
            if early is not None:
                parsed.add("new_start_date", *early, index)
        if named is not None and action is not None and (new_date or action not in DATE_CHANGES):
            parsed.targets.append(named.target(index, action, new_date))
    return parsed


@dataclass(frozen=True, slots=True)
class _Named:
    """What every correction names, validated: the relationship and its period's start."""

    customer: CustomerId
    born: date | None
    role: Role
    kind: ProductKind
    start: date
    reason: CorrectionReason

    def target(self, index: int, action: CorrectionAction, new_date: date | None = None) -> _Target:
        return _Target(
            index, self.customer, self.role, self.kind, self.start, self.reason, action, new_date
        )


def _parse_named(
    parsed: Rejections,
    index: int,
    item: RetractItem | CorrectItem,
    *,
    allow_synthetic: bool,
    today: date,
) -> _Named | None:
    """What the item names, or None when something is wrong (noted in ``parsed``)."""
    try:
        customer, born = parse_customer(
            item.customer_id, allow_synthetic=allow_synthetic, today=today
        )
    except InvalidValue as error:
        parsed.add("customer_id", str(error), error.code, index)
        customer = born = None
    role_fault = role_problem(item.role, None)  # a disponent's customer: NOT_FOUND if wrong
    if role_fault is not None:
        parsed.add("role", *role_fault, index)
    kind = item.kind
    if isinstance(kind, UnknownNumber):
        parsed.add("kind", f"has unknown value {kind.number}", "KIND_UNKNOWN", index)
    start = None
    if not item.start_date.strip():
        parsed.add(
            "start_date", "is required: the start of the period, as ListOwn shows it",
            "START_DATE_MISSING", index,
        )  # fmt: skip
    else:
        start = parsed.parse("start_date", parse_date, item.start_date, today, item=index)
    reason = _required_choice(
        parsed, index, "reason", item.reason, "why the data is corrected", "REASON"
    )
    if customer is None or role_fault is not None or start is None or reason is None:
        return None
    if isinstance(kind, UnknownNumber):
        return None
    assert isinstance(item.role, Role)
    return _Named(customer, born, item.role, kind, start, reason)


def _required_choice(parsed: Rejections, index: int, field: str, value, what: str, code: str):
    """``value`` (an enum member), or None after noting it missing (``CODE_MISSING``) or a
    number the contract does not define (``CODE_UNKNOWN``)."""
    if value is None:
        parsed.add(field, f"is required: {what}", f"{code}_MISSING", index)
        return None
    if isinstance(value, UnknownNumber):
        parsed.add(field, f"has unknown value {value.number}", f"{code}_UNKNOWN", index)
        return None
    return value


def _parse_change(
    parsed: Rejections, index: int, change: CorrectionAction | UnknownNumber | None
) -> CorrectionAction | None:
    action = _required_choice(
        parsed, index, "change", change, "new_start_date, new_end_date or reopen", "CHANGE"
    )
    if action is not None and action not in CHANGES:
        parsed.add("change", "is not a change a correction can make", "CHANGE_UNKNOWN", index)
        return None
    return action


def apply_corrections(
    txn: WriteTxn, institution: str, targets: Sequence[_Target], today: date, within: str
) -> CorrectionResult:
    """Applies every item in order (a later item sees an earlier one's change); raises,
    so that the transaction leaves nothing, if any item names no period or breaks a rule
    of periods."""
    conflicts = Rejections()
    missing: list[Rejection] = []
    changed = 0
    for target in targets:
        key = (target.customer, institution, target.role, target.kind)
        history = txn.history(*key)
        index = period_starting(history, target.start) if history else None
        if index is None:
            missing.append(Rejection(f"{within}[{target.index}]", _NO_SUCH_PERIOD, "NOT_FOUND"))
            continue
        try:
            updated, note = _corrected(history, index, target, today)
        except InvalidValue as error:
            field = _DATE_FIELD.get(target.action, "start_date")
            conflicts.add(field, str(error), error.code, target.index)
            continue
        if note is None:
            continue
        notes = _kept_notes(txn.corrections(*key), target, updated, index)
        txn.put_history(*key, updated, (*notes, note) if updated else ())
        changed += 1
    conflicts.raise_if_any(within)
    if missing:
        raise NotFound(missing)
    reasons = Counter(target.reason.name for target in targets)
    return CorrectionResult(changed, len(targets) - changed, dict(sorted(reasons.items())))


def _corrected(
    history: History, index: int, target: _Target, today: date
) -> tuple[History, Correction | None]:
    """The history after the correction, and its note (None: nothing changed)."""
    period = history[index]
    if target.action is CorrectionAction.RETRACTED:
        updated = retract_period(history, index)
        return updated, Correction(today, target.action, target.reason)
    if target.action is CorrectionAction.START_CORRECTED:
        updated, changed = correct_start(history, index, target.new_date)
        previous = period.start
    elif target.action is CorrectionAction.END_CORRECTED:
        updated, changed = correct_end(history, index, target.new_date)
        previous = period.end
    else:
        updated, changed = reopen_period(history, index)
        previous = period.end
    if not changed:
        return history, None
    note = Correction(today, target.action, target.reason, updated[index].start, previous)
    return updated, note


def _kept_notes(notes: Corrections, target: _Target, updated: History, index: int) -> Corrections:
    """The relationship's notes after ``target``: a retracted period's go with it, and a
    moved start renames the period its notes name."""
    if target.action is CorrectionAction.RETRACTED:
        return tuple(note for note in notes if note.period_start != target.start)
    if target.action is CorrectionAction.START_CORRECTED:
        moved = updated[index].start
        return tuple(
            replace(note, period_start=moved) if note.period_start == target.start else note
            for note in notes
        )
    return notes
