"""Development and test tooling: finding or starting the stores, running the whole system."""
