"""Documents made from committed records (WeasyPrint). No Flask."""
