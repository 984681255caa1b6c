"""The course's experiments: one run of any method on any task in one call (:mod:`.experiments`),
and the stored studies and GPU measurements read back, with their spreads over seeds (:mod:`.results`)."""
