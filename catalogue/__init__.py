"""The dataset catalogue: HealthDCAT-AP datasets harvested from the nodes, exported as RDF."""
