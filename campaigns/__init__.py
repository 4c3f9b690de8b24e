"""Rules of each way of raising money. Uses ledger/, knows nothing of Flask or HTTP."""
