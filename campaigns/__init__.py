"""Rules of each way of raising money: campaigns and their lifecycle, then contributions,
round-ups, voting rounds and loans. Uses ``ledger``; knows nothing of Flask or HTTP."""
