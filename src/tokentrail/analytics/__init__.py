"""Analyses over the ledger: reports, reconciliation, unit economics, agent trees, exports."""
