"""The reference TPC chain: synthetic detector data and the plugins that process it."""
