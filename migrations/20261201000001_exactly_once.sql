-- Exactly-once outcomes under at-least-once delivery (issue: duplicate events, retries, reruns,
-- crashes).
--
-- root_data_restores:
--   * applied_at is written in the same transaction that changes the data (tenant and table
--     restores into the live database) or that renames a finished database into place, so a
--     retried step, a crashed mark-success or a dashboard rerun finds the restore applied and
--     reports the saved result instead of applying it again.
--   * heartbeat_at moves while a phase works, so the reaper can tell a dead run from a slow one.
--   * replaced_database: a whole-database restore with replace into an existing database keeps
--     the old database under this name (the swap is one transaction).
ALTER TABLE root_data_restores
    ADD COLUMN applied_at        TIMESTAMPTZ,
    ADD COLUMN heartbeat_at      TIMESTAMPTZ,
    ADD COLUMN replaced_database VARCHAR(63);

-- The reaper scans running work by age.
CREATE INDEX idx_root_data_backups_running ON root_data_backups (progress_updated_at)
    WHERE status IN ('pending', 'running');
CREATE INDEX idx_root_data_restores_running ON root_data_restores (heartbeat_at)
    WHERE status IN ('pending', 'running');
