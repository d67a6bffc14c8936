"""The key broker service (KBS): attestation-gated release of keys and secrets."""
