"""The data stage. For now: tokenizer training and documents -> token shards (the cleaning
pipeline — readers, filters, dedup, decontamination — is the data issue's work)."""
