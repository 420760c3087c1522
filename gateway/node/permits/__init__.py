"""The node's copies of the data permits that cover its datasets, pushed by the hub."""
