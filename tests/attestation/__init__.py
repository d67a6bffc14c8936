"""Tests for ppml.attestation."""
