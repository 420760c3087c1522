"""Wire formats shared by the central services and the nodes: pydantic schemas, no code paths."""
