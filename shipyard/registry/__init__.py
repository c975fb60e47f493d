"""The release registry: the ledger, stores, publishing, mirrors, the signed approval policy and the doors."""
