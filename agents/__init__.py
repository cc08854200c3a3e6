"""Meta-learning agents (one module per algorithm) above their shared building blocks
(:mod:`metarl.agents.common`)."""
