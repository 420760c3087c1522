"""The node's local SQL index: the attributes federated queries need, refreshed by a sync."""
