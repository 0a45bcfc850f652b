"""Cloud consumer daemons: ingest, train, evaluate, publish; and the monitor."""
