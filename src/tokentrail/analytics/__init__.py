"""Analyses over the ledger: exports, allocation, repricing and more."""
