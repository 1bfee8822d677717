"""Incidents: correlation of findings into threads (tracker), silences, digests, and the glue to the outbox."""
