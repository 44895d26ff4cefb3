"""Device drivers: small async protocols per capability, an explicit registry of driver names."""
