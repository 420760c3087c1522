"""Jobs at a node: durable job state in the node database and the workers that run them."""
