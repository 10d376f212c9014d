"""Helpers shared by the test files: `from tests.helpers.cli_checks import one_error_line`."""
