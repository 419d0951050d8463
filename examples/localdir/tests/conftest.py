"""The conformance kit's fixtures (rxfs_url, rxfs_mount, rxfs_dir ...) for these tests."""

pytest_plugins = ["rxfs.testing"]
