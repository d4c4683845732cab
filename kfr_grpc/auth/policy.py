"""What an authenticated caller may do.

- Institutions act only for themselves: ``institution_org_number`` in a request must be
  the organisation the call is made for (the token's consumer; a vendor acting for an
  institution acts for that institution only). That the institution is registered is
  the register's rule.
- Only configured agencies may look up, and only under a legal mandate allowed to them;
  an owner-only agency sees owner relationships only.
- Every organisation may call so often per second: an agency's own rate where it has
  one, else the common one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kfr_grpc.auth.authenticator import Caller
from kfr_grpc.config import AgencyConfig, RateLimitConfig
from kfr_grpc.errors import InvalidArgument, PermissionDenied
from kfr_grpc.register.customer_ids import parse_org_number
from kfr_grpc.register.values import InvalidValue


@dataclass(frozen=True)
class Rate:
    """Calls per second an organisation may make, on average, and in a burst."""

    per_second: float
    burst: float
    setting: str  # where it is configured, for the refusal's message


def _burst_for(per_second: float | None, common: Rate) -> float:
    """An agency with a rate of its own and no burst: two seconds' worth of calls."""
    return max(1.0, 2 * per_second) if per_second else common.burst


class AccessPolicy:
    def __init__(
        self, agencies: Iterable[AgencyConfig], rates: RateLimitConfig | None = None
    ) -> None:
        rates = rates or RateLimitConfig()
        self._common_rate = Rate(rates.calls_per_second, rates.burst, "rate_limits")
        self.replace_agencies(agencies)

    def replace_agencies(self, agencies: Iterable[AgencyConfig]) -> None:
        """Takes a new agency list (SIGHUP); calls in flight keep the one they started with."""
        self._agencies = {agency.org_number: agency for agency in agencies}
        self._rates = {
            agency.org_number: Rate(
                agency.calls_per_second or self._common_rate.per_second,
                agency.burst or _burst_for(agency.calls_per_second, self._common_rate),
                f"calls_per_second of agency {agency.org_number}",
            )
            for agency in self._agencies.values()
            if agency.calls_per_second is not None or agency.burst is not None
        }

    def rate_of(self, organisation: str) -> Rate:
        """How often ``organisation`` may call."""
        return self._rates.get(organisation, self._common_rate)

    def acting_institution(
        self, caller: Caller, institution_org_number: str, field: str = "institution_org_number"
    ) -> str:
        """The institution a request acts for, after checking the caller may act for it.
        ``field`` names where the request carries it; a refusal names no value (a
        mistaken one could be a customer's org number)."""
        if not institution_org_number.strip():
            raise InvalidArgument.field(field, "is required", "REQUIRED")
        try:
            claimed = parse_org_number(institution_org_number)
        except InvalidValue as error:
            raise InvalidArgument.field(field, str(error), error.code) from None
        if claimed != caller.org_number:
            raise PermissionDenied(
                f"{field} is not the organisation {caller.org_number} this call is made for "
                "(the access token's consumer)"
            )
        return claimed

    def agency(self, caller: Caller) -> AgencyConfig:
        """The caller's agency grant; PERMISSION_DENIED for anyone not configured as agency."""
        agency = self._agencies.get(caller.org_number)
        if agency is None:
            raise PermissionDenied(
                f"organisation {caller.org_number} is not registered as an agency that may look up"
            )
        if caller.supplier is not None and not agency.allow_suppliers:
            raise PermissionDenied(
                f"agency {caller.org_number} does not take lookups made for it by a vendor "
                f"(the token names supplier {caller.supplier}); call with the agency's own "
                "token, or set allow_suppliers for it"
            )
        return agency

    def allows_mandate(self, caller: Caller, legal_mandate: str) -> bool:
        """Whether ``caller`` is an agency allowed to invoke ``legal_mandate``."""
        agency = self._agencies.get(caller.org_number)
        return agency is not None and legal_mandate in agency.mandates

    def is_agency(self, caller: Caller) -> bool:
        return caller.org_number in self._agencies

    @staticmethod
    def require_mandate(agency: AgencyConfig, legal_mandate: str) -> None:
        if legal_mandate not in agency.mandates:
            raise PermissionDenied(
                "legal_mandate is not among the mandates allowed for your agency; "
                "ask the register operator which mandates are configured"
            )
