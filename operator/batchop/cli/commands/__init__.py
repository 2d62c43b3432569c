"""One module per ``batchop`` subcommand; each exposes ``register(subparsers)``."""
