"""Auth: who is calling (certificates) and what they may do (policy)."""
