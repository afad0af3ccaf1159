"""Call handling: per-call dispatch, admission control, sessions and their state machine."""
