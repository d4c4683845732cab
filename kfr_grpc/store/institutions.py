"""Institution records and collection accounts.

An institution is kept under its org number (the participants are a public list); a
collection account maps to the org number of the institution that uses it (one
institution per account), under a tag of the account (``codec``).
"""

from __future__ import annotations

from collections.abc import Iterator

from kfr_grpc.register.model import Institution
from kfr_grpc.store import codec
from kfr_grpc.store.layout import (
    COLLECTION_ACCOUNTS,
    INSTITUTIONS,
    INSTITUTIONS_CHANGED_KEY,
    META,
)
from kfr_grpc.store.txn import TxnBase, WriteTxnBase


class InstitutionReads(TxnBase):
    def institution(self, org_number: str) -> Institution | None:
        opened = self._get_opened(INSTITUTIONS, codec.org_key(org_number))
        return None if opened is None else codec.decode_institution(org_number, opened)

    def institutions(self) -> Iterator[Institution]:
        for key, sealed in self._txn.cursor(db=self._db[INSTITUTIONS]):
            plaintext = self._open(INSTITUTIONS, key, sealed)
            yield codec.decode_institution(codec.org_from_key(key), plaintext)

    def institutions_version(self) -> int:
        """A number that changes whenever an institution record does (caches check it)."""
        return int(self._txn.get(INSTITUTIONS_CHANGED_KEY, b"0", db=self._db[META]))

    def collection_account_owner(self, account: str) -> str | None:
        for key in self._collection_keys(account):
            opened = self._get_opened(COLLECTION_ACCOUNTS, key)
            if opened is not None:
                return codec.decode_collection_account(key, opened)[1]
        return None

    def collection_accounts(self) -> Iterator[tuple[str, str]]:
        """Every (collection account, org number of its institution), by account."""
        found = [
            codec.decode_collection_account(key, self._open(COLLECTION_ACCOUNTS, key, sealed))
            for key, sealed in self._txn.cursor(db=self._db[COLLECTION_ACCOUNTS])
        ]
        yield from sorted(found)

    def _collection_keys(self, account: str) -> list[bytes]:
        """Every key ``account`` may be under: one per pseudonym version, newest first, and
        the account itself while legacy entries may remain."""
        data = codec.collection_tag_data(account)
        keys = [
            codec.collection_key(version, self._tag(version, data))
            for version, _ in self._crypto.newest_first
        ]
        if self._legacy:
            keys.append(account.encode("ascii"))
        return keys


class InstitutionWrites(WriteTxnBase, InstitutionReads):
    def put_institution(self, institution: Institution) -> None:
        key = codec.org_key(institution.org_number)
        self._put(INSTITUTIONS, key, codec.encode_institution(institution))
        changed = str(self.institutions_version() + 1).encode()
        self._txn.put(INSTITUTIONS_CHANGED_KEY, changed, db=self._db[META])

    def put_collection_account(self, account: str, org_number: str) -> None:
        """Keeps the account under the current pseudonym version's tag (only)."""
        self.delete_collection_account(account)
        key = codec.collection_key(
            self.pseudonym_version,
            self._tag(self.pseudonym_version, codec.collection_tag_data(account)),
        )
        self._put(COLLECTION_ACCOUNTS, key, codec.encode_collection_account(account, org_number))

    def delete_collection_account(self, account: str) -> None:
        for key in self._collection_keys(account):
            self._delete(COLLECTION_ACCOUNTS, key)
