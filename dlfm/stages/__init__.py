"""Stage functions behind the entry points: each validates, runs inside one tracked run, returns a summary."""
