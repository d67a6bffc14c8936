"""Microsoft Azure Attestation client tests."""
