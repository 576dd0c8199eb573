"""After the answer: accounting, the usage ledger, usage reports and metrics."""
