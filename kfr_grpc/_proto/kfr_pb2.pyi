from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_OWNER: _ClassVar[Role]
    ROLE_DISPONENT: _ClassVar[Role]

class ProductKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRODUCT_KIND_UNSPECIFIED: _ClassVar[ProductKind]
    PRODUCT_KIND_PAYMENT_ACCOUNT: _ClassVar[ProductKind]
    PRODUCT_KIND_LOAN: _ClassVar[ProductKind]
    PRODUCT_KIND_OTHER: _ClassVar[ProductKind]

class OwnershipType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OWNERSHIP_TYPE_UNSPECIFIED: _ClassVar[OwnershipType]
    OWNERSHIP_TYPE_PRIMARY_OWNER: _ClassVar[OwnershipType]
    OWNERSHIP_TYPE_NOT_PRIMARY_OWNER: _ClassVar[OwnershipType]
    OWNERSHIP_TYPE_UNKNOWN: _ClassVar[OwnershipType]

class CorrectionReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CORRECTION_REASON_UNSPECIFIED: _ClassVar[CorrectionReason]
    CORRECTION_REASON_REPORTED_IN_ERROR: _ClassVar[CorrectionReason]
    CORRECTION_REASON_WRONG_CUSTOMER: _ClassVar[CorrectionReason]
    CORRECTION_REASON_WRONG_ROLE: _ClassVar[CorrectionReason]
    CORRECTION_REASON_WRONG_KIND: _ClassVar[CorrectionReason]
    CORRECTION_REASON_WRONG_DATE: _ClassVar[CorrectionReason]
    CORRECTION_REASON_ENDED_IN_ERROR: _ClassVar[CorrectionReason]

class CorrectionAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CORRECTION_ACTION_UNSPECIFIED: _ClassVar[CorrectionAction]
    CORRECTION_ACTION_RETRACTED: _ClassVar[CorrectionAction]
    CORRECTION_ACTION_START_CORRECTED: _ClassVar[CorrectionAction]
    CORRECTION_ACTION_END_CORRECTED: _ClassVar[CorrectionAction]
    CORRECTION_ACTION_REOPENED: _ClassVar[CorrectionAction]

class RoleFilter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_FILTER_UNSPECIFIED: _ClassVar[RoleFilter]
    ROLE_FILTER_ALL: _ClassVar[RoleFilter]
    ROLE_FILTER_OWNER_ONLY: _ClassVar[RoleFilter]
ROLE_UNSPECIFIED: Role
ROLE_OWNER: Role
ROLE_DISPONENT: Role
PRODUCT_KIND_UNSPECIFIED: ProductKind
PRODUCT_KIND_PAYMENT_ACCOUNT: ProductKind
PRODUCT_KIND_LOAN: ProductKind
PRODUCT_KIND_OTHER: ProductKind
OWNERSHIP_TYPE_UNSPECIFIED: OwnershipType
OWNERSHIP_TYPE_PRIMARY_OWNER: OwnershipType
OWNERSHIP_TYPE_NOT_PRIMARY_OWNER: OwnershipType
OWNERSHIP_TYPE_UNKNOWN: OwnershipType
CORRECTION_REASON_UNSPECIFIED: CorrectionReason
CORRECTION_REASON_REPORTED_IN_ERROR: CorrectionReason
CORRECTION_REASON_WRONG_CUSTOMER: CorrectionReason
CORRECTION_REASON_WRONG_ROLE: CorrectionReason
CORRECTION_REASON_WRONG_KIND: CorrectionReason
CORRECTION_REASON_WRONG_DATE: CorrectionReason
CORRECTION_REASON_ENDED_IN_ERROR: CorrectionReason
CORRECTION_ACTION_UNSPECIFIED: CorrectionAction
CORRECTION_ACTION_RETRACTED: CorrectionAction
CORRECTION_ACTION_START_CORRECTED: CorrectionAction
CORRECTION_ACTION_END_CORRECTED: CorrectionAction
CORRECTION_ACTION_REOPENED: CorrectionAction
ROLE_FILTER_UNSPECIFIED: RoleFilter
ROLE_FILTER_ALL: RoleFilter
ROLE_FILTER_OWNER_ONLY: RoleFilter

class ReportRequest(_message.Message):
    __slots__ = ("institution_org_number", "relationships")
    INSTITUTION_ORG_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RELATIONSHIPS_FIELD_NUMBER: _ClassVar[int]
    institution_org_number: str
    relationships: _containers.RepeatedCompositeFieldContainer[Relationship]
    def __init__(self, institution_org_number: _Optional[str] = ..., relationships: _Optional[_Iterable[_Union[Relationship, _Mapping]]] = ...) -> None: ...

class Relationship(_message.Message):
    __slots__ = ("customer_id", "role", "start_date", "kind")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    role: Role
    start_date: str
    kind: ProductKind
    def __init__(self, customer_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., start_date: _Optional[str] = ..., kind: _Optional[_Union[ProductKind, str]] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("registered_count", "already_registered_count")
    REGISTERED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ALREADY_REGISTERED_COUNT_FIELD_NUMBER: _ClassVar[int]
    registered_count: int
    already_registered_count: int
    def __init__(self, registered_count: _Optional[int] = ..., already_registered_count: _Optional[int] = ...) -> None: ...

class ReportStreamResponse(_message.Message):
    __slots__ = ("accepted_count", "registered_count", "already_registered_count", "rejected_count", "rejected", "rejected_truncated", "chunk_count")
    ACCEPTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ALREADY_REGISTERED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    accepted_count: int
    registered_count: int
    already_registered_count: int
    rejected_count: int
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedItem]
    rejected_truncated: bool
    chunk_count: int
    def __init__(self, accepted_count: _Optional[int] = ..., registered_count: _Optional[int] = ..., already_registered_count: _Optional[int] = ..., rejected_count: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[RejectedItem, _Mapping]]] = ..., rejected_truncated: _Optional[bool] = ..., chunk_count: _Optional[int] = ...) -> None: ...

class RejectedItem(_message.Message):
    __slots__ = ("position", "field", "code", "reason")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    position: int
    field: str
    code: str
    reason: str
    def __init__(self, position: _Optional[int] = ..., field: _Optional[str] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EndRequest(_message.Message):
    __slots__ = ("institution_org_number", "endings")
    INSTITUTION_ORG_NUMBER_FIELD_NUMBER: _ClassVar[int]
    ENDINGS_FIELD_NUMBER: _ClassVar[int]
    institution_org_number: str
    endings: _containers.RepeatedCompositeFieldContainer[Ending]
    def __init__(self, institution_org_number: _Optional[str] = ..., endings: _Optional[_Iterable[_Union[Ending, _Mapping]]] = ...) -> None: ...

class Ending(_message.Message):
    __slots__ = ("customer_id", "role", "end_date", "kind")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    role: Role
    end_date: str
    kind: ProductKind
    def __init__(self, customer_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., end_date: _Optional[str] = ..., kind: _Optional[_Union[ProductKind, str]] = ...) -> None: ...

class EndResponse(_message.Message):
    __slots__ = ("ended_count", "already_ended_count")
    ENDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ALREADY_ENDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ended_count: int
    already_ended_count: int
    def __init__(self, ended_count: _Optional[int] = ..., already_ended_count: _Optional[int] = ...) -> None: ...

class ListOwnRequest(_message.Message):
    __slots__ = ("institution_org_number", "customer_id")
    INSTITUTION_ORG_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    institution_org_number: str
    customer_id: str
    def __init__(self, institution_org_number: _Optional[str] = ..., customer_id: _Optional[str] = ...) -> None: ...

class ListOwnResponse(_message.Message):
    __slots__ = ("relationships",)
    RELATIONSHIPS_FIELD_NUMBER: _ClassVar[int]
    relationships: _containers.RepeatedCompositeFieldContainer[OwnRelationship]
    def __init__(self, relationships: _Optional[_Iterable[_Union[OwnRelationship, _Mapping]]] = ...) -> None: ...

class OwnRelationship(_message.Message):
    __slots__ = ("role", "periods", "kind", "corrections")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PERIODS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CORRECTIONS_FIELD_NUMBER: _ClassVar[int]
    role: Role
    periods: _containers.RepeatedCompositeFieldContainer[Period]
    kind: ProductKind
    corrections: _containers.RepeatedCompositeFieldContainer[CorrectionNote]
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., periods: _Optional[_Iterable[_Union[Period, _Mapping]]] = ..., kind: _Optional[_Union[ProductKind, str]] = ..., corrections: _Optional[_Iterable[_Union[CorrectionNote, _Mapping]]] = ...) -> None: ...

class CorrectionNote(_message.Message):
    __slots__ = ("made_date", "action", "reason", "period_start_date", "previous_date")
    MADE_DATE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_DATE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_DATE_FIELD_NUMBER: _ClassVar[int]
    made_date: str
    action: CorrectionAction
    reason: CorrectionReason
    period_start_date: str
    previous_date: str
    def __init__(self, made_date: _Optional[str] = ..., action: _Optional[_Union[CorrectionAction, str]] = ..., reason: _Optional[_Union[CorrectionReason, str]] = ..., period_start_date: _Optional[str] = ..., previous_date: _Optional[str] = ...) -> None: ...

class RetractRequest(_message.Message):
    __slots__ = ("institution_org_number", "retractions")
    INSTITUTION_ORG_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RETRACTIONS_FIELD_NUMBER: _ClassVar[int]
    institution_org_number: str
    retractions: _containers.RepeatedCompositeFieldContainer[Retraction]
    def __init__(self, institution_org_number: _Optional[str] = ..., retractions: _Optional[_Iterable[_Union[Retraction, _Mapping]]] = ...) -> None: ...

class Retraction(_message.Message):
    __slots__ = ("customer_id", "role", "kind", "start_date", "reason")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    role: Role
    kind: ProductKind
    start_date: str
    reason: CorrectionReason
    def __init__(self, customer_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., kind: _Optional[_Union[ProductKind, str]] = ..., start_date: _Optional[str] = ..., reason: _Optional[_Union[CorrectionReason, str]] = ...) -> None: ...

class RetractResponse(_message.Message):
    __slots__ = ("retracted_count",)
    RETRACTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    retracted_count: int
    def __init__(self, retracted_count: _Optional[int] = ...) -> None: ...

class CorrectRequest(_message.Message):
    __slots__ = ("institution_org_number", "corrections")
    INSTITUTION_ORG_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CORRECTIONS_FIELD_NUMBER: _ClassVar[int]
    institution_org_number: str
    corrections: _containers.RepeatedCompositeFieldContainer[PeriodCorrection]
    def __init__(self, institution_org_number: _Optional[str] = ..., corrections: _Optional[_Iterable[_Union[PeriodCorrection, _Mapping]]] = ...) -> None: ...

class PeriodCorrection(_message.Message):
    __slots__ = ("customer_id", "role", "kind", "start_date", "new_start_date", "new_end_date", "reopen", "reason")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    NEW_START_DATE_FIELD_NUMBER: _ClassVar[int]
    NEW_END_DATE_FIELD_NUMBER: _ClassVar[int]
    REOPEN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    role: Role
    kind: ProductKind
    start_date: str
    new_start_date: str
    new_end_date: str
    reopen: bool
    reason: CorrectionReason
    def __init__(self, customer_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., kind: _Optional[_Union[ProductKind, str]] = ..., start_date: _Optional[str] = ..., new_start_date: _Optional[str] = ..., new_end_date: _Optional[str] = ..., reopen: _Optional[bool] = ..., reason: _Optional[_Union[CorrectionReason, str]] = ...) -> None: ...

class CorrectResponse(_message.Message):
    __slots__ = ("corrected_count", "unchanged_count")
    CORRECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_COUNT_FIELD_NUMBER: _ClassVar[int]
    corrected_count: int
    unchanged_count: int
    def __init__(self, corrected_count: _Optional[int] = ..., unchanged_count: _Optional[int] = ...) -> None: ...

class ReconcileRequest(_message.Message):
    __slots__ = ("institution_org_number", "relationships", "apply", "as_of_date", "max_ends")
    INSTITUTION_ORG_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RELATIONSHIPS_FIELD_NUMBER: _ClassVar[int]
    APPLY_FIELD_NUMBER: _ClassVar[int]
    AS_OF_DATE_FIELD_NUMBER: _ClassVar[int]
    MAX_ENDS_FIELD_NUMBER: _ClassVar[int]
    institution_org_number: str
    relationships: _containers.RepeatedCompositeFieldContainer[Relationship]
    apply: bool
    as_of_date: str
    max_ends: int
    def __init__(self, institution_org_number: _Optional[str] = ..., relationships: _Optional[_Iterable[_Union[Relationship, _Mapping]]] = ..., apply: _Optional[bool] = ..., as_of_date: _Optional[str] = ..., max_ends: _Optional[int] = ...) -> None: ...

class ReconcileResponse(_message.Message):
    __slots__ = ("matched_count", "missing_count", "missing_positions", "missing_truncated", "not_sent_count", "rejected_count", "rejected", "rejected_truncated", "registered_count", "ended_count", "chunk_count", "applied", "ending_withheld")
    MATCHED_COUNT_FIELD_NUMBER: _ClassVar[int]
    MISSING_COUNT_FIELD_NUMBER: _ClassVar[int]
    MISSING_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    MISSING_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    NOT_SENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ENDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    ENDING_WITHHELD_FIELD_NUMBER: _ClassVar[int]
    matched_count: int
    missing_count: int
    missing_positions: _containers.RepeatedScalarFieldContainer[int]
    missing_truncated: bool
    not_sent_count: int
    rejected_count: int
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedItem]
    rejected_truncated: bool
    registered_count: int
    ended_count: int
    chunk_count: int
    applied: bool
    ending_withheld: bool
    def __init__(self, matched_count: _Optional[int] = ..., missing_count: _Optional[int] = ..., missing_positions: _Optional[_Iterable[int]] = ..., missing_truncated: _Optional[bool] = ..., not_sent_count: _Optional[int] = ..., rejected_count: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[RejectedItem, _Mapping]]] = ..., rejected_truncated: _Optional[bool] = ..., registered_count: _Optional[int] = ..., ended_count: _Optional[int] = ..., chunk_count: _Optional[int] = ..., applied: _Optional[bool] = ..., ending_withheld: _Optional[bool] = ...) -> None: ...

class GetRequestLogRequest(_message.Message):
    __slots__ = ("institution_org_number", "correlation_id")
    INSTITUTION_ORG_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    institution_org_number: str
    correlation_id: str
    def __init__(self, institution_org_number: _Optional[str] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class GetRequestLogResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[RequestLogRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[RequestLogRecord, _Mapping]]] = ...) -> None: ...

class RequestLogRecord(_message.Message):
    __slots__ = ("correlation_id", "time", "method", "institution_org_number", "supplier_org_number", "status", "message", "counts", "rejected")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    INSTITUTION_ORG_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SUPPLIER_ORG_NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    time: str
    method: str
    institution_org_number: str
    supplier_org_number: str
    status: str
    message: str
    counts: _containers.ScalarMap[str, int]
    rejected: _containers.RepeatedCompositeFieldContainer[FieldViolation]
    def __init__(self, correlation_id: _Optional[str] = ..., time: _Optional[str] = ..., method: _Optional[str] = ..., institution_org_number: _Optional[str] = ..., supplier_org_number: _Optional[str] = ..., status: _Optional[str] = ..., message: _Optional[str] = ..., counts: _Optional[_Mapping[str, int]] = ..., rejected: _Optional[_Iterable[_Union[FieldViolation, _Mapping]]] = ...) -> None: ...

class FieldViolation(_message.Message):
    __slots__ = ("field", "reason", "code")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    field: str
    reason: str
    code: str
    def __init__(self, field: _Optional[str] = ..., reason: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...

class Period(_message.Message):
    __slots__ = ("start_date", "end_date")
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    start_date: str
    end_date: str
    def __init__(self, start_date: _Optional[str] = ..., end_date: _Optional[str] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("customer_id", "from_date", "to_date", "role_filter", "legal_mandate", "account_info_request_id", "only_primary_owner")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_DATE_FIELD_NUMBER: _ClassVar[int]
    TO_DATE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FILTER_FIELD_NUMBER: _ClassVar[int]
    LEGAL_MANDATE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_INFO_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ONLY_PRIMARY_OWNER_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    from_date: str
    to_date: str
    role_filter: RoleFilter
    legal_mandate: str
    account_info_request_id: str
    only_primary_owner: bool
    def __init__(self, customer_id: _Optional[str] = ..., from_date: _Optional[str] = ..., to_date: _Optional[str] = ..., role_filter: _Optional[_Union[RoleFilter, str]] = ..., legal_mandate: _Optional[str] = ..., account_info_request_id: _Optional[str] = ..., only_primary_owner: _Optional[bool] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("institutions", "joined_after_from_date")
    INSTITUTIONS_FIELD_NUMBER: _ClassVar[int]
    JOINED_AFTER_FROM_DATE_FIELD_NUMBER: _ClassVar[int]
    institutions: _containers.RepeatedCompositeFieldContainer[InstitutionRelation]
    joined_after_from_date: _containers.RepeatedCompositeFieldContainer[Participant]
    def __init__(self, institutions: _Optional[_Iterable[_Union[InstitutionRelation, _Mapping]]] = ..., joined_after_from_date: _Optional[_Iterable[_Union[Participant, _Mapping]]] = ...) -> None: ...

class InstitutionRelation(_message.Message):
    __slots__ = ("org_number", "name", "roles", "active", "ownership_type", "active_payment_account")
    ORG_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    OWNERSHIP_TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_PAYMENT_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    org_number: str
    name: str
    roles: _containers.RepeatedScalarFieldContainer[Role]
    active: bool
    ownership_type: OwnershipType
    active_payment_account: bool
    def __init__(self, org_number: _Optional[str] = ..., name: _Optional[str] = ..., roles: _Optional[_Iterable[_Union[Role, str]]] = ..., active: _Optional[bool] = ..., ownership_type: _Optional[_Union[OwnershipType, str]] = ..., active_payment_account: _Optional[bool] = ...) -> None: ...

class LookupCollectionAccountRequest(_message.Message):
    __slots__ = ("account_number", "legal_mandate", "account_info_request_id")
    ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LEGAL_MANDATE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_INFO_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    account_number: str
    legal_mandate: str
    account_info_request_id: str
    def __init__(self, account_number: _Optional[str] = ..., legal_mandate: _Optional[str] = ..., account_info_request_id: _Optional[str] = ...) -> None: ...

class LookupCollectionAccountResponse(_message.Message):
    __slots__ = ("institutions",)
    INSTITUTIONS_FIELD_NUMBER: _ClassVar[int]
    institutions: _containers.RepeatedCompositeFieldContainer[Institution]
    def __init__(self, institutions: _Optional[_Iterable[_Union[Institution, _Mapping]]] = ...) -> None: ...

class Institution(_message.Message):
    __slots__ = ("org_number", "name")
    ORG_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    org_number: str
    name: str
    def __init__(self, org_number: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListParticipantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListParticipantsResponse(_message.Message):
    __slots__ = ("participants",)
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    participants: _containers.RepeatedCompositeFieldContainer[Participant]
    def __init__(self, participants: _Optional[_Iterable[_Union[Participant, _Mapping]]] = ...) -> None: ...

class Participant(_message.Message):
    __slots__ = ("org_number", "name", "joined_date", "closed_date", "has_collection_accounts")
    ORG_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    JOINED_DATE_FIELD_NUMBER: _ClassVar[int]
    CLOSED_DATE_FIELD_NUMBER: _ClassVar[int]
    HAS_COLLECTION_ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    org_number: str
    name: str
    joined_date: str
    closed_date: str
    has_collection_accounts: bool
    def __init__(self, org_number: _Optional[str] = ..., name: _Optional[str] = ..., joined_date: _Optional[str] = ..., closed_date: _Optional[str] = ..., has_collection_accounts: _Optional[bool] = ...) -> None: ...
