"""Benchmarks of rxfs against sshfs: ``python -m benchmarks.run`` (see README.md here)."""
