"""The double-entry ledger: accounts, append-only entries, balances and their invariants.

Framework-free: SQLAlchemy only. Everything that moves money in the engine goes through
:func:`post_entry` (or its bulk, two-phase and reversal siblings) inside one transaction run by
:func:`run_in_transaction`.
"""

from ledger.checks import TrialBalanceRow, find_violations, trial_balance
from ledger.errors import (
    AccountClosed,
    AccountExists,
    AccountNotEmpty,
    AccountNotFound,
    AlreadyResolved,
    AlreadyReversed,
    EntryNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidEntry,
    InvalidResolution,
    LedgerError,
)
from ledger.models import POSTED_PHASES, Account, AccountType, Balance, Base, Entry, Phase, Posting
from ledger.money import Money, allocate
from ledger.posting import (
    AccountBalance,
    EntryRequest,
    Leg,
    PostedEntry,
    close_account,
    collector_paused,
    entry_status,
    get_balance,
    load_entry,
    open_account,
    post_entries,
    post_entry,
    post_pending,
    reverse_entry,
    void_pending,
)
from ledger.unit_of_work import run_in_transaction

__all__ = [
    "POSTED_PHASES",
    "Account",
    "AccountBalance",
    "AccountClosed",
    "AccountExists",
    "AccountNotEmpty",
    "AccountNotFound",
    "AccountType",
    "AlreadyResolved",
    "AlreadyReversed",
    "Balance",
    "Base",
    "Entry",
    "EntryNotFound",
    "EntryRequest",
    "IdempotencyConflict",
    "InsufficientFunds",
    "InvalidEntry",
    "InvalidResolution",
    "LedgerError",
    "Leg",
    "Money",
    "Phase",
    "PostedEntry",
    "Posting",
    "TrialBalanceRow",
    "allocate",
    "close_account",
    "collector_paused",
    "entry_status",
    "find_violations",
    "get_balance",
    "load_entry",
    "open_account",
    "post_entries",
    "post_entry",
    "post_pending",
    "reverse_entry",
    "run_in_transaction",
    "trial_balance",
    "void_pending",
]
