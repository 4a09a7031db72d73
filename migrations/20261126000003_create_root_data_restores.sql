-- One row per restore: what was restored from which backup, by which run, and what it did.
CREATE TABLE root_data_restores (
    id                 SERIAL PRIMARY KEY,
    uuid               VARCHAR(36)  NOT NULL UNIQUE,
    tenant_id          INTEGER,
    backup_uuid        VARCHAR(36)  NOT NULL,
    restore_scope      VARCHAR(20)  NOT NULL,
    -- NULL: the live database (DATABASE_URL); otherwise a database on the same server.
    target_database    VARCHAR(63),
    restore_tables     TEXT[],
    status             VARCHAR(20)  NOT NULL DEFAULT 'pending',
    inngest_run_id     VARCHAR(100),
    -- The backup taken of what this restore replaced, so a mistaken restore can be undone.
    safety_backup_uuid VARCHAR(36),
    -- {"schema.table": rows_loaded, ...}
    rows_per_table     JSONB,
    started_at         TIMESTAMPTZ,
    completed_at       TIMESTAMPTZ,
    error_message      TEXT,
    created_at         TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ  NOT NULL DEFAULT now(),

    CONSTRAINT root_data_restores_scope_check
        CHECK (restore_scope IN ('all', 'tenant', 'table')),
    CONSTRAINT root_data_restores_status_check
        CHECK (status IN ('pending', 'running', 'success', 'failed'))
);

CREATE INDEX idx_root_data_restores_tenant_id ON root_data_restores (tenant_id, created_at DESC);
CREATE INDEX idx_root_data_restores_backup_uuid ON root_data_restores (backup_uuid);
CREATE INDEX idx_root_data_restores_status ON root_data_restores (status);
