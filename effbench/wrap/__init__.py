"""``effbench wrap``: energy for any load generator (runner), its power timeline (timeline), the
tool's results read back (formats, locate, convert) into records (records) with energy attributed
to each request (attribution)."""
