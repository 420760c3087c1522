"""Wire formats shared by the central services and the nodes: pydantic schemas, constants
and the job code archive's format (code_archive), no code paths of either side."""
