"""Analyses over the ledger (reports, reconciliation with the providers' own bills, …)."""
