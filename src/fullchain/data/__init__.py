"""The data stage: raw files -> clean, deduplicated, decontaminated documents -> token shards.

`pipeline.run` (the `fullchain data` command) reads inputs (`readers`, `extract`), runs the
configured steps in shards on worker processes or Ray (`steps`, `shard`, `executor`), dedups
across shards in two passes (`dedup`, `minhash`), writes documents, stats and rejects, and can
train a tokenizer and write token shards (`tokenize`). `synth` writes self-instruct pairs through
`fullchain.llm`; `score` gives perplexities under a fullchain checkpoint."""
