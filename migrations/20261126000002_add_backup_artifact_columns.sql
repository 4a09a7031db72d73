-- What a verified artifact needs beyond the original design's columns.
ALTER TABLE root_data_backups
    -- sha256 (hex) of the published manifest.json; the manifest lists every data file's sha256,
    -- so this one value pins the whole artifact.
    ADD COLUMN checksum            VARCHAR(64),
    -- A copy of the manifest (tables, row counts, snapshot, versions) for the API and restores.
    ADD COLUMN manifest            JSONB,
    -- Progress while running: compressed bytes and rows written so far.
    ADD COLUMN bytes_written       BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN rows_written        BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN progress_updated_at TIMESTAMPTZ,
    -- When the verify step last re-read the artifact successfully.
    ADD COLUMN verified_at         TIMESTAMPTZ,
    ADD CONSTRAINT root_data_backups_checksum_check
        CHECK (checksum IS NULL OR checksum ~ '^[0-9a-f]{64}$');
