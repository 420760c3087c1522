"""Data permits (EHDS Arts. 67-68): applications, institutional reviews, the access body's
decisions, and the issued permit that every node enforces."""
