"""Call records, transcripts and recordings kept on the operator's own database and disk."""
