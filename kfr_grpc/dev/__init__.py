"""Local development and test tooling: a dev PKI, synthetic IDs, a ready-made setup.

Nothing here is used by the server itself.
"""
