-- The backup policy (retention and schedules), edited by platform admins through the REST API
-- and read by the scheduler. One row (id = 1); absent means the documented defaults, which
-- follow the RiverEdge plan: full backups daily at 02:00 kept 7 days, incrementals hourly kept
-- 1 day, and never fewer than the newest 10 successful backups.
CREATE TABLE root_data_backup_policy (
    id                          SMALLINT     PRIMARY KEY DEFAULT 1,
    retention_days_full         INTEGER      NOT NULL,
    retention_days_incremental  INTEGER      NOT NULL,
    min_keep                    INTEGER      NOT NULL,
    full_cron                   VARCHAR(100) NOT NULL,
    incremental_cron            VARCHAR(100),
    updated_at                  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    -- The `sub` of the platform admin who saved it (audit).
    updated_by                  VARCHAR(100),

    CONSTRAINT root_data_backup_policy_single_row CHECK (id = 1),
    CONSTRAINT root_data_backup_policy_retention_check
        CHECK (retention_days_full BETWEEN 1 AND 3650
           AND retention_days_incremental BETWEEN 1 AND 3650
           AND min_keep BETWEEN 0 AND 1000)
);
