"""Tests of private federated training (real Flower engines, real consent service)."""
