"""Reliability and security tests (issue 7); see docs/reliability.md."""
