"""The release registry: the ledger, stores, publishing, mirrors, signed policy and approvals."""
