"""Analyses built on the ledger: unit economics, agent trees."""
