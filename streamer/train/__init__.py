"""Training, corpora and evaluation for the ser-live models."""
