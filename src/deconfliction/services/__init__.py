"""Use cases: the one place each flow lives; every face calls these."""
