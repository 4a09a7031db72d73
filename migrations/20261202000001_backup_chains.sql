-- Incremental chains and scheduled backups (issues: incremental backups; schedules and retention).
--
-- root_data_backups:
--   * parent_uuid: the backup an incremental builds on (a full or an earlier incremental of the
--     same scope and tenant); NULL for a full. Retention expires a chain as a whole: a backup is
--     never deleted while a retained incremental names it here.
--   * chain_uuid: the full backup at the root of the chain (a full names itself), so a chain is
--     one indexed lookup for the API, the page and retention.
--   * position: where the backup stands in the source's history (snapshot xmin/xmax as xid8,
--     system identifier, timeline), the starting point of the next incremental.
--   * fallback_reason: why an incremental request was taken as a full (no parent, schema changed,
--     TRUNCATE since the parent, ...), shown to the operator.
--   * scheduled_for: the cron tick a scheduled backup belongs to, so a retried or duplicated tick
--     is one backup.
ALTER TABLE root_data_backups
    ADD COLUMN parent_uuid     VARCHAR(36),
    ADD COLUMN chain_uuid      VARCHAR(36),
    ADD COLUMN position        JSONB,
    ADD COLUMN fallback_reason TEXT,
    ADD COLUMN scheduled_for   TIMESTAMPTZ;

CREATE INDEX idx_root_data_backups_parent ON root_data_backups (parent_uuid)
    WHERE parent_uuid IS NOT NULL;
CREATE INDEX idx_root_data_backups_chain ON root_data_backups (chain_uuid)
    WHERE chain_uuid IS NOT NULL;
