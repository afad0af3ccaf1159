"""The throwaway PostgreSQL server of the store tests lives in devtools (``make cluster-up``
uses it too); re-exported here for the tests."""

from devtools.postgres import PostgresServer, PostgresUnavailable, find_bin_dir

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bin_dir"]
