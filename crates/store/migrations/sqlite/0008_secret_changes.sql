-- On PostgreSQL, version 8 announces secret changes to the other replicas.
-- One relay owns a SQLite file, so there is no one to tell; the version is
-- kept so the two backends' versions mean the same.
SELECT 1;
