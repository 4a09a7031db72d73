-- The REST API's download zip is built from the artifact's files without recompressing them.
-- A STORED zip needs every file's CRC-32 in its headers; computing them means one full read of
-- the artifact, so the first download does it once and records the result here, keyed by the
-- manifest checksum it was computed for (a different checksum means a stale index).
-- {"checksum": "<manifest sha256>", "files": [{"name": "...", "size": 123, "crc32": 456}, ...]}
ALTER TABLE root_data_backups ADD COLUMN download_index JSONB;
