"""Analyses over the ledger: forecasts and other read-only views computed from reports."""
