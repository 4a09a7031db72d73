-- The backup table of the original design (seed-design.md), in valid PostgreSQL.
--
-- Differences from the sketch, each for a reason:
--   * timestamptz instead of timestamp: runs are compared across time zones and with Inngest.
--   * tenant_id is nullable, but only platform-wide rows may leave it NULL (riveredge.md §1.1):
--     scope 'all' is platform-wide by definition and must not be attributed to a tenant (a tenant
--     could otherwise download everyone's data); scope 'tenant' needs its tenant; scope 'table'
--     is either a platform operator's whole tables (NULL) or one tenant's rows of those tables.
--   * CHECK constraints on the value sets the app already uses.
--   * The sketch's inline INDEX lines are not PostgreSQL: they are CREATE INDEX statements below.
CREATE TABLE root_data_backups (
    id             SERIAL PRIMARY KEY,
    uuid           VARCHAR(36)  NOT NULL UNIQUE,
    tenant_id      INTEGER,
    name           VARCHAR(200) NOT NULL,
    backup_type    VARCHAR(20)  NOT NULL DEFAULT 'full',
    backup_scope   VARCHAR(20)  NOT NULL DEFAULT 'all',
    backup_tables  TEXT[],
    file_path      VARCHAR(500),
    file_uuid      VARCHAR(36),
    file_size      BIGINT,
    status         VARCHAR(20)  NOT NULL DEFAULT 'pending',
    inngest_run_id VARCHAR(100),
    started_at     TIMESTAMPTZ,
    completed_at   TIMESTAMPTZ,
    error_message  TEXT,
    created_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    deleted_at     TIMESTAMPTZ,

    CONSTRAINT root_data_backups_backup_type_check
        CHECK (backup_type IN ('full', 'incremental')),
    CONSTRAINT root_data_backups_backup_scope_check
        CHECK (backup_scope IN ('all', 'tenant', 'table')),
    CONSTRAINT root_data_backups_status_check
        CHECK (status IN ('pending', 'running', 'success', 'failed')),
    CONSTRAINT root_data_backups_tenant_scope_check
        CHECK ((backup_scope = 'all' AND tenant_id IS NULL)
            OR (backup_scope = 'tenant' AND tenant_id IS NOT NULL)
            OR backup_scope = 'table'),
    CONSTRAINT root_data_backups_tables_check
        CHECK (backup_scope <> 'table' OR cardinality(backup_tables) > 0),
    CONSTRAINT root_data_backups_file_size_check
        CHECK (file_size IS NULL OR file_size >= 0)
);

CREATE INDEX idx_root_data_backups_tenant_id ON root_data_backups (tenant_id);
CREATE INDEX idx_root_data_backups_backup_type ON root_data_backups (backup_type);
CREATE INDEX idx_root_data_backups_backup_scope ON root_data_backups (backup_scope);
CREATE INDEX idx_root_data_backups_status ON root_data_backups (status);
CREATE INDEX idx_root_data_backups_created_at ON root_data_backups (created_at);
-- The backup page lists a tenant's backups newest first, filtered by status.
CREATE INDEX idx_root_data_backups_tenant_status ON root_data_backups (tenant_id, status, created_at DESC);
