"""Institution records and collection accounts.

An institution is kept under its org number; a collection account number maps to the
org number of the institution that uses it (sealed; one institution per account).
"""

from __future__ import annotations

from collections.abc import Iterator

from kfr_grpc.register.model import Institution
from kfr_grpc.store import codec
from kfr_grpc.store.layout import COLLECTION_ACCOUNTS, INSTITUTIONS
from kfr_grpc.store.txn import TxnBase, WriteTxnBase


class InstitutionReads(TxnBase):
    def institution(self, org_number: str) -> Institution | None:
        opened = self._get_opened(INSTITUTIONS, codec.org_key(org_number))
        return None if opened is None else codec.decode_institution(org_number, opened)

    def institutions(self) -> Iterator[Institution]:
        for key, sealed in self._txn.cursor(db=self._db[INSTITUTIONS]):
            plaintext = self._open(INSTITUTIONS, key, sealed)
            yield codec.decode_institution(codec.org_from_key(key), plaintext)

    def collection_account_owner(self, account: str) -> str | None:
        opened = self._get_opened(COLLECTION_ACCOUNTS, account.encode("ascii"))
        return None if opened is None else opened.decode("ascii")

    def collection_accounts(self) -> Iterator[tuple[str, str]]:
        """Every (collection account, org number of its institution), by account."""
        for key, sealed in self._txn.cursor(db=self._db[COLLECTION_ACCOUNTS]):
            yield key.decode("ascii"), self._open(COLLECTION_ACCOUNTS, key, sealed).decode("ascii")


class InstitutionWrites(WriteTxnBase, InstitutionReads):
    def put_institution(self, institution: Institution) -> None:
        key = codec.org_key(institution.org_number)
        self._put(INSTITUTIONS, key, codec.encode_institution(institution))

    def put_collection_account(self, account: str, org_number: str) -> None:
        self._put(COLLECTION_ACCOUNTS, account.encode("ascii"), org_number.encode("ascii"))

    def delete_collection_account(self, account: str) -> None:
        self._delete(COLLECTION_ACCOUNTS, account.encode("ascii"))
