-- Schedules, GFS tiers, per-tenant fan-out and stall detection in the backup policy (issue:
-- schedules, policy, retention and the operator's signals). Defaults keep the behaviour of a
-- policy saved before these columns existed: UTC crons, no GFS tiers, no fan-out, and a backup
-- or restore without progress for 10 minutes counts as stalled.
ALTER TABLE root_data_backup_policy
    ADD COLUMN timezone       VARCHAR(64) NOT NULL DEFAULT 'UTC',
    ADD COLUMN keep_daily     INTEGER     NOT NULL DEFAULT 0,
    ADD COLUMN keep_weekly    INTEGER     NOT NULL DEFAULT 0,
    ADD COLUMN keep_monthly   INTEGER     NOT NULL DEFAULT 0,
    ADD COLUMN keep_yearly    INTEGER     NOT NULL DEFAULT 0,
    ADD COLUMN tenant_fanout  BOOLEAN     NOT NULL DEFAULT FALSE,
    ADD COLUMN stall_minutes  INTEGER     NOT NULL DEFAULT 10,
    ADD CONSTRAINT root_data_backup_policy_tiers_check
        CHECK (keep_daily BETWEEN 0 AND 3650 AND keep_weekly BETWEEN 0 AND 520
           AND keep_monthly BETWEEN 0 AND 240 AND keep_yearly BETWEEN 0 AND 100
           AND stall_minutes BETWEEN 1 AND 110);
