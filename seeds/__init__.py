"""Demo data (seeds/demo/) and the synthetic data generator behind `cdp generate`."""
