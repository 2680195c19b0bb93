"""Analysis over the ledger: reports, sessions, anomalies."""
