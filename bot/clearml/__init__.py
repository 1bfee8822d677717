"""ClearML access: the async REST client, its typed errors and typed views of ClearML entities."""
