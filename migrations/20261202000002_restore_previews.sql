-- Restore previews and tenant clones (issue: tenant restore on a busy shared database).
--
-- root_data_restores:
--   * dry_run: the restore only computes what it would do; it changes nothing and its row
--     records the preview instead.
--   * preview: what the restore would do (or, after a real restore, what it did), per table:
--     {"tables": [{"table": "public.t", "insert": 0, "update": 0, "delete": 0}, ...],
--      "sequences": [{"sequence": "public.s", "from": 1, "to": 2}, ...]}
--   * target_tenant_id: a clone restores the backup's tenant as this other tenant id.
ALTER TABLE root_data_restores
    ADD COLUMN dry_run          BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN preview          JSONB,
    ADD COLUMN target_tenant_id INTEGER;
